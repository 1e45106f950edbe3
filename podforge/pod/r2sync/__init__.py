"""`podforge r2sync`: ComfyUI's outputs to R2, every finished file exactly once.

    podforge r2sync --watch /workspace/ComfyUI/output [--watch DIR ...] [--journal PATH]
                    [--settle SECONDS] [--once | --test]

Plain Python with boto3 (no pyinfra), run on the pod. A sqlite journal (WAL) records each
file's identity (path, size, mtime, sha256), its state and, for a multipart upload, the
upload id and every finished part's ETag, so a restart after a kill, a reboot or an outage
uploads what is missing and nothing twice. Credentials come from the environment or a 0600
file (R2_ENV_FILE) and are never printed.

The parts, one job each:
- ``settings``: R2_* from the environment or a 0600 file, the pod's identity in keys;
- ``store``: the boto3 client, which errors retrying can help, the retry, HEAD and
  conditional writes (a 412 is ``KeyTaken``), the probes;
- ``journal``: the sqlite journal (WAL) of files, parts and index entries;
- ``watcher``: which files are finished (settled, and open for writing by no process) and
  the inotify wake-up;
- ``uploader``: one file to its key: a PUT, or a multipart upload that resumes;
- ``index``: each day's ``metadata.json``, merged by compare-and-swap; ``--list``;
- ``cli``: ``podforge r2sync`` (``--once``, ``--test``, ``--list``, the daemon).

Libraries, and why: boto3 for S3 (R2's API), with its retries off (ours back off, add
jitter and ride out outages, ``podforge/pod/retry.py``); not boto3's transfer manager,
which cannot resume a multipart upload in another process nor send a condition with the
complete; sqlite3 (the standard library) for the journal; ``inotify_simple`` for wake-ups
(a thin wrapper over the kernel's calls; watchdog would add an observer thread and polling
we do not want: the rescan decides, an event only wakes it).
"""
