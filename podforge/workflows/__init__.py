"""ComfyUI workflows, each job once:

- ``graph``: the one reader of a workflow (the UI's JSON with its subgraphs, or an API-format
  prompt) into typed nodes; pure;
- ``needs``: what a workflow needs to run (model files with their sources, node packs at
  their pins), and what cannot be resolved; pure;
- ``checks``: whether a pod has what a workflow loads (files, node types); pure;
- ``fitting``: an upstream example fitted to a pod (model widgets, precision, attention); pure;
- ``files``: the user's workflows read where the deploy is driven from, their needs joined to
  the settings (the laptop, the image build);
- ``pod``: ``podforge workflows check`` and ``install``, on the pod.
"""
