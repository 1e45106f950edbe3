"""The model catalog: which files each feature needs, per variant (data, no I/O).

Repos and paths are the real Hugging Face ones (docs/facts.md#models). ``bytes`` is exact where
it is known and then checked after download; ``approx_bytes`` only sizes the disk
preflight. Where neither is known the hub's HEAD supplies the size at fetch time.
Users add files of their own, from Hugging Face, CivitAI or any URL, with the same source
schema (``custom_models`` in group_data; podforge/core/sources.py).
"""

from __future__ import annotations

from podforge.core.sources import ModelSource

GB = 10**9


class CatalogFile(ModelSource):
    feature: str
    variant: str | None  # None: needed by the feature whatever the variant
    dest: str  # relative to the ComfyUI models dir
    approx_bytes: int | None = None  # for planning only
    # Which loader widget the file fills in a workflow (workflows/fitting.py MODEL_WIDGETS).
    role: str | None = None

    @property
    def planned_bytes(self) -> int:
        return self.bytes or self.approx_bytes or 0


WAN21 = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
WAN22 = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
QWEN_EDIT = "Comfy-Org/Qwen-Image-Edit_ComfyUI"
QWEN_IMAGE = "Comfy-Org/Qwen-Image_ComfyUI"
SD_GGUF = "MCG-NJU/SteadyDancer-GGUF"


CATALOG: tuple[CatalogFile, ...] = (
    # SteadyDancer (WAN 2.1 I2V based) runs on WanVideoWrapper's loaders: kijai's own T5
    # encoder and VAE (below), not Comfy-Org's repackaged ones; CLIP vision, the lightx2v LoRA.
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo=WAN21,
        path="split_files/clip_vision/clip_vision_h.safetensors",
        dest="clip_vision/clip_vision_h.safetensors",
        approx_bytes=1_264 * 10**6,
        role="clip_vision",
    ),
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Kijai/WanVideo_comfy",
        path="Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        dest="loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        approx_bytes=738 * 10**6,
        role="lora",
    ),
    # WanVideoWrapper's loaders read kijai's own text encoder and VAE files, not ComfyUI's.
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Kijai/WanVideo_comfy",
        path="umt5-xxl-enc-bf16.safetensors",
        dest="text_encoders/umt5-xxl-enc-bf16.safetensors",
        approx_bytes=11_400 * 10**6,
        role="wanvideo_text_encoder",
    ),
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Kijai/WanVideo_comfy",
        path="Wan2_1_VAE_bf16.safetensors",
        dest="vae/Wan2_1_VAE_bf16.safetensors",
        approx_bytes=254 * 10**6,
        role="wanvideo_vae",
    ),
    # Pose detection (ComfyUI-WanAnimatePreprocess), in kijai's layout under models/detection:
    # the ONNX graph and its external weights side by side, and the person detector.
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Kijai/vitpose_comfy",
        path="onnx/vitpose_h_wholebody_model.onnx",
        dest="detection/onnx/vitpose_h_wholebody_model.onnx",
        role="pose_model",
    ),
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Kijai/vitpose_comfy",
        path="onnx/vitpose_h_wholebody_data.bin",
        dest="detection/onnx/vitpose_h_wholebody_data.bin",
        approx_bytes=2_500 * 10**6,
    ),
    CatalogFile(
        feature="steadydancer",
        variant=None,
        repo="Wan-AI/Wan2.2-Animate-14B",
        path="process_checkpoint/det/yolov10m.onnx",
        dest="detection/onnx/yolov10m.onnx",
        role="detector",
    ),
    CatalogFile(
        feature="steadydancer",
        variant="fp16",
        repo="Kijai/WanVideo_comfy",
        path="SteadyDancer/Wan21_I2V_SteadyDancer_fp16.safetensors",
        dest="diffusion_models/Wan21_I2V_SteadyDancer_fp16.safetensors",
        approx_bytes=33 * GB,
        role="diffusion_model",
    ),
    CatalogFile(
        feature="steadydancer",
        variant="fp8",
        repo="Kijai/WanVideo_comfy_fp8_scaled",
        path="SteadyDancer/Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors",
        dest="diffusion_models/Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors",
        approx_bytes=16_400 * 10**6,
        role="diffusion_model",
    ),
    # GGUF quants as published in MCG-NJU/SteadyDancer-GGUF (names unverified:
    # docs/facts.md#models).
    CatalogFile(
        feature="steadydancer",
        variant="gguf:q5_k_m",
        repo=SD_GGUF,
        path="Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf",
        dest="diffusion_models/Wan21_I2V_SteadyDancer_fp16-Q5_K_M_fix_5d_tensor.gguf",
        approx_bytes=12_700 * 10**6,
        role="diffusion_model",
    ),
    CatalogFile(
        feature="steadydancer",
        variant="gguf:q6_k",
        repo=SD_GGUF,
        path="Wan21_I2V_SteadyDancer_fp16-Q6_K_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf",
        dest="diffusion_models/Wan21_I2V_SteadyDancer_fp16-Q6_K_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf",
        approx_bytes=14_500 * 10**6,
        role="diffusion_model",
    ),
    # WAN 2.2 I2V A14B: two experts (high / low noise).
    CatalogFile(
        feature="wan22",
        variant=None,
        repo=WAN21,
        path="split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        dest="text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        bytes=6_735_906_897,
        role="text_encoder",
    ),
    CatalogFile(
        feature="wan22",
        variant=None,
        repo=WAN21,
        path="split_files/vae/wan_2.1_vae.safetensors",
        dest="vae/wan_2.1_vae.safetensors",
        approx_bytes=254 * 10**6,
        role="vae",
    ),
    *(
        CatalogFile(
            feature="wan22",
            variant="fp8",
            repo=WAN22,
            path=f"split_files/diffusion_models/wan2.2_i2v_{noise}_noise_14B_fp8_scaled.safetensors",
            dest=f"diffusion_models/wan2.2_i2v_{noise}_noise_14B_fp8_scaled.safetensors",
            approx_bytes=14_300 * 10**6,
        )
        for noise in ("high", "low")
    ),
    *(
        CatalogFile(
            feature="wan22",
            variant="gguf:q5_0",
            repo="QuantStack/Wan2.2-I2V-A14B-GGUF",
            path=f"{noise}Noise/Wan2.2-I2V-A14B-{noise}Noise-Q5_0.gguf",
            dest=f"diffusion_models/Wan2.2-I2V-A14B-{noise}Noise-Q5_0.gguf",
            approx_bytes=10_200 * 10**6,
        )
        for noise in ("High", "Low")
    ),
    # TurboDiffusion (needs torch >= 2.7; loads through its own node, not ComfyUI's loaders).
    *(
        CatalogFile(
            feature="turbodiffusion",
            variant=None,
            repo="TurboDiffusion/TurboWan2.2-I2V-A14B-720P",
            path=f"TurboWan2.2-I2V-A14B-{noise}-720P-quant.pth",
            dest=f"diffusion_models/TurboWan2.2-I2V-A14B-{noise}-720P-quant.pth",
            approx_bytes=14_500 * 10**6,
        )
        for noise in ("high", "low")
    ),
    # Qwen-Image-Edit 2509.
    CatalogFile(
        feature="qwen_edit",
        variant="fp8",
        repo=QWEN_EDIT,
        path="split_files/diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors",
        dest="diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors",
        approx_bytes=20_400 * 10**6,
    ),
    CatalogFile(
        feature="qwen_edit",
        variant=None,
        repo=QWEN_IMAGE,
        path="split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        dest="text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        approx_bytes=9_380 * 10**6,
    ),
    CatalogFile(
        feature="qwen_edit",
        variant=None,
        repo=QWEN_IMAGE,
        path="split_files/vae/qwen_image_vae.safetensors",
        dest="vae/qwen_image_vae.safetensors",
        approx_bytes=254 * 10**6,
    ),
    CatalogFile(
        feature="qwen_edit",
        variant=None,
        repo="lightx2v/Qwen-Image-Lightning",
        path="Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors",
        dest="loras/Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors",
        approx_bytes=850 * 10**6,
    ),
    # DWPose annotator (comfyui_controlnet_aux reads it from its annotator path).
    CatalogFile(
        feature="dwpose",
        variant=None,
        repo="yzd-v/DWPose",
        path="dw-ll_ucoco_384.onnx",
        dest="annotators/yzd-v/DWPose/dw-ll_ucoco_384.onnx",
        bytes=134_399_116,
    ),
    CatalogFile(
        feature="dwpose",
        variant=None,
        repo="yzd-v/DWPose",
        path="yolox_l.onnx",
        dest="annotators/yzd-v/DWPose/yolox_l.onnx",
        approx_bytes=217 * 10**6,
    ),
)

# Quantisation levels from smallest to largest: "nearest published" walks this order.
GGUF_ORDER: tuple[str, ...] = ("q2_k", "q3_k_m", "q4_k_m", "q5_0", "q5_k_m", "q6_k", "q8_0")


def published_variants(feature: str) -> list[str]:
    return sorted({f.variant for f in CATALOG if f.feature == feature and f.variant is not None})


def published_quants(feature: str) -> list[str]:
    return [v.removeprefix("gguf:") for v in published_variants(feature) if v.startswith("gguf:")]


def nearest_quant(wanted: str, published: list[str]) -> str:
    """The published quant closest to ``wanted`` in GGUF_ORDER; on a tie the smaller."""
    if not published:
        raise ValueError("no GGUF quant is published")
    rank = GGUF_ORDER.index(wanted)
    return min(published, key=lambda q: (abs(GGUF_ORDER.index(q) - rank), GGUF_ORDER.index(q)))


def files_for(feature: str, variant: str | None) -> list[CatalogFile]:
    """The feature's shared files plus those of ``variant`` (None: shared files only)."""
    return [
        f for f in CATALOG if f.feature == feature and (f.variant is None or f.variant == variant)
    ]
