"""Compile the guided-step and batched-LoRA kernels for an sm_90 (H100) target without a GPU; run as a script.

The interpreter executes the kernels as numpy code, so it accepts things the real compiler rejects
(and rejects some it accepts). Compiling to PTX here catches the first kind on a machine without a
GPU. It must run in a process where TRITON_INTERPRET is unset, hence a script, not a test module.
Prints one line per kernel: its name and how many 128-bit loads/stores the PTX has, which shows that
the streaming loads are vectorised when tensors are 16-byte aligned and N % 16 == 0 (the
specialisation Triton applies at launch).
"""

from __future__ import annotations

import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import guided_step_triton as gst
from kernels import lora_batch_triton as lbt

TARGET = GPUTarget("cuda", 90, 32)


def compile_ptx(fn: triton.runtime.JITFunction, signature: dict[str, str], constexprs: dict[str, object]) -> str:
    """PTX of ``fn`` with every pointer and integer argument hinted divisible by 16."""
    hinted = [i for i, ty in enumerate(signature.values()) if ty.startswith("*") or ty == "i32"]
    attrs = {(i,): [["tt.divisibility", 16]] for i in hinted}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": gst.NUM_WARPS, "enable_fp_fusion": gst.ENABLE_FP_FUSION}
    return triton.compile(src, target=TARGET, options=options).asm["ptx"]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("TRITON_INTERPRET=1 is set: the kernels would not be compiled", file=sys.stderr)
        return 2
    block = {"BLOCK_SIZE": gst.BLOCK_SIZE}
    for dt in ("bf16", "fp32"):
        big, small = f"*{dt}", "*fp32"
        step_sig = dict(
            out_ptr=big, pc_ptr=big, pu_ptr=big, cfg_ptr=small, x_ptr=big, dt_ptr=small, g_ptr=big, w_ptr=small,
            coef_ptr=small, norm_ptr=small, skip_ptr="*u8", partial_ptr=small, ref_ptr=small, N="i32",
            num_chunks="i32", eps="fp32", sqrt_n="fp32", K="constexpr", HAS_UNCOND="constexpr", HAS_X="constexpr",
            NORMED="constexpr", RELATIVE="constexpr", BLOCK_SIZE="constexpr",
        )
        fixup_sig = dict(
            out_ptr=big, pc_ptr=big, pu_ptr=big, cfg_ptr=small, x_ptr=big, dt_ptr=small, skip_ptr="*u8", N="i32",
            HAS_UNCOND="constexpr", HAS_X="constexpr", BLOCK_SIZE="constexpr",
        )
        sumsq_sig = dict(g_ptr=big, partial_ptr=small, N="i32", num_chunks="i32", BLOCK_SIZE="constexpr")
        ref_sig = dict(pc_ptr=big, pu_ptr=big, ref_partial_ptr=small, N="i32", num_chunks="i32",
                       HAS_UNCOND="constexpr", BLOCK_SIZE="constexpr")
        flags = dict(K=3, HAS_UNCOND=True, HAS_X=True, **block)
        kernels = [
            (f"step_sum_{dt}", gst._guided_step_kernel, step_sig, dict(NORMED=False, RELATIVE=False, **flags)),
            (f"step_unit_{dt}", gst._guided_step_kernel, step_sig, dict(NORMED=True, RELATIVE=False, **flags)),
            (f"step_relative_{dt}", gst._guided_step_kernel, step_sig, dict(NORMED=True, RELATIVE=True, **flags)),
            (f"step_unguided_{dt}", gst._guided_step_kernel, step_sig,
             dict(NORMED=False, RELATIVE=False, **{**flags, "K": 0})),
            (f"reference_sumsq_{dt}", gst._reference_sumsq_kernel, ref_sig, dict(HAS_UNCOND=True, **block)),
            (f"fixup_{dt}", gst._unguided_fixup_kernel, fixup_sig, dict(HAS_UNCOND=True, HAS_X=True, **block)),
            (f"sumsq_{dt}", gst._sumsq_kernel, sumsq_sig, block),
        ]
        shrink_sig = dict(x_ptr=big, a_ptr=big, idx_ptr="*i64", h_ptr="*fp32", T="i32", IN="i32", R="i32",
                          stride_xb="i64", stride_xt="i32", R_PAD="constexpr", BLOCK_T="constexpr", BLOCK_K="constexpr", IEEE="constexpr")
        expand_sig = dict(h_ptr="*fp32", b_ptr=big, idx_ptr="*i64", coef_ptr="*fp32", out_ptr=big, T="i32",
                          OUT="i32", R="i32", R_PAD="constexpr", BLOCK_T="constexpr", BLOCK_N="constexpr",
                          IEEE="constexpr", ACCUMULATE="constexpr")
        ieee = dt == "fp32"
        kernels += [
            (f"lora_shrink_{dt}", lbt._shrink_kernel, shrink_sig,
             dict(R_PAD=16, BLOCK_T=lbt.BLOCK_T, BLOCK_K=lbt.BLOCK_K, IEEE=ieee)),
            (f"lora_expand_{dt}", lbt._expand_kernel, expand_sig,
             dict(R_PAD=16, BLOCK_T=lbt.BLOCK_T, BLOCK_N=lbt.BLOCK_N, IEEE=ieee, ACCUMULATE=True)),
        ]
        for name, fn, sig, consts in kernels:
            ptx = compile_ptx(fn, sig, consts)
            print(name, "ld.global.v4", ptx.count("ld.global.v4"), "st.global.v4", ptx.count("st.global.v4"))
    finalize_sig = dict(
        partial_ptr="*fp32", w_ptr="*fp32", coef_ptr="*fp32", norm_ptr="*fp32", skip_ptr="*u8",
        ref_partial_ptr="*fp32", ref_ptr="*fp32", num_chunks="i32", N="i32",
        K="constexpr", BLOCK_C="constexpr", RELATIVE="constexpr",
    )
    for relative in (False, True):
        consts = dict(K=3, BLOCK_C=gst.MAX_FINALIZE_BLOCK, RELATIVE=relative)
        ptx = compile_ptx(gst._finalize_kernel, finalize_sig, consts)
        print("finalize_relative" if relative else "finalize",
              "ld.global.v4", ptx.count("ld.global.v4"), "st.global.v4", ptx.count("st.global.v4"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
