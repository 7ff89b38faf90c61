"""kquant.recipes for llama-quantize's low-bit file types (IQ1/IQ2/IQ3, TQ, Q1_0, Q2_0,
NVFP4, MXFP4_MOE), the importance-matrix rules, ``missing_imatrix`` and ``prune_layers``.

Every expected type below is worked out by hand from llama.cpp's src/llama-quant.cpp at the
commit kquant.recipes names (llama_tensor_get_type_impl, tensor_type_fallback,
tensor_requires_imatrix, remap_layer), not computed by the module under test.
"""

from __future__ import annotations

import pytest

from kquant import QuantType
from kquant.recipes import (
    FileType,
    ModelFacts,
    QuantizeError,
    TensorSpec,
    parse_prune_layers,
    plan_quantization,
)

Q = QuantType
N_LAYER = 8  # n/8 = 1: layer 0 is the "first eighth"; layer 7 the last


def model(n_head_kv=2, n_ff=1376, tied=False, n_expert=0, arch="llama", n_layer=N_LAYER):
    """A small Llama: width 512, 8 heads of 64. With n_head_kv=2 it has GQA 4; n_ff=1376
    gives ffn_down rows that are whole 32-blocks but not 256-blocks (nor 64-blocks: 1376 =
    21.5 * 64). With n_expert, the FFN is stacked experts (3-D tensors) and a router."""
    kv = 64 * n_head_kv
    t = [TensorSpec("token_embd.weight", (512, 1000)), TensorSpec("output_norm.weight", (512,))]
    if not tied:
        t.append(TensorSpec("output.weight", (512, 1000)))
    for i in range(n_layer):
        b = f"blk.{i}."
        t += [
            TensorSpec(b + "attn_norm.weight", (512,)),
            TensorSpec(b + "attn_q.weight", (512, 512)),
            TensorSpec(b + "attn_k.weight", (512, kv)),
            TensorSpec(b + "attn_v.weight", (512, kv)),
            TensorSpec(b + "attn_output.weight", (512, 512)),
            TensorSpec(b + "ffn_norm.weight", (512,)),
        ]
        if n_expert:
            t += [
                TensorSpec(b + "ffn_gate_inp.weight", (512, n_expert)),
                TensorSpec(b + "ffn_gate_exps.weight", (512, n_ff, n_expert)),
                TensorSpec(b + "ffn_up_exps.weight", (512, n_ff, n_expert)),
                TensorSpec(b + "ffn_down_exps.weight", (n_ff, 512, n_expert)),
            ]
        else:
            t += [
                TensorSpec(b + "ffn_gate.weight", (512, n_ff)),
                TensorSpec(b + "ffn_up.weight", (512, n_ff)),
                TensorSpec(b + "ffn_down.weight", (n_ff, 512)),
            ]
    facts = ModelFacts(arch, n_layer=n_layer, n_head=8, n_head_kv=n_head_kv, n_expert=n_expert, n_embd=512)
    return t, facts


def check(plan, expected):
    """expected: full names or per-layer suffixes -> a type or a list of 8 types (one per layer)."""
    for key, want in expected.items():
        if "." in key and not key.startswith(("token_embd", "output")) and not key.startswith("blk."):
            wants = want if isinstance(want, list) else [want] * N_LAYER
            got = [plan[f"blk.{i}.{key}"].target_type for i in range(N_LAYER)]
            assert got == wants, (key, [g.name for g in got], [w.name for w in wants])
        else:
            assert plan[key].target_type is want, (key, plan[key].target_type.name, want.name)


FIRST = lambda a, b: [a] + [b] * (N_LAYER - 1)  # noqa: E731 - layer 0 differs

# model(): GQA 4, ffn_down rows of 1376, untied output
GQA4 = {
    "IQ2_XXS": {
        "token_embd.weight": Q.Q2_K, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ2_XXS, "attn_k.weight": Q.IQ2_XXS, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ2_XXS, "ffn_gate.weight": Q.IQ2_XXS, "ffn_up.weight": Q.IQ2_XXS,
        # layer 0: Q2_K, whose 1376-rows fall back to Q4_0; IQ2_XXS falls back to IQ4_NL
        "ffn_down.weight": FIRST(Q.Q4_0, Q.IQ4_NL),
    },
    "IQ2_XS": {
        "token_embd.weight": Q.Q2_K, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ2_XS, "attn_k.weight": Q.IQ2_XS, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ2_XS, "ffn_gate.weight": Q.IQ2_XS, "ffn_up.weight": Q.IQ2_XS,
        "ffn_down.weight": FIRST(Q.Q4_0, Q.IQ4_NL),
    },
    "IQ2_S": {  # default tensor type IQ2_XS
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ2_XS, "attn_k.weight": Q.IQ2_XS, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ3_S, "ffn_gate.weight": Q.IQ2_XS, "ffn_up.weight": Q.IQ2_XS,
        "ffn_down.weight": Q.IQ4_NL,  # IQ3_S (layer 0) and IQ2_XS both fall back to IQ4_NL
    },
    "IQ2_M": {  # default tensor type IQ2_S
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ2_S, "attn_k.weight": Q.IQ2_S, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ3_S, "ffn_gate.weight": Q.IQ2_S, "ffn_up.weight": Q.IQ2_S,
        "ffn_down.weight": Q.IQ4_NL,
    },
    "IQ1_S": {
        "token_embd.weight": Q.Q2_K, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ1_S, "attn_k.weight": Q.IQ1_S, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ2_XXS, "ffn_gate.weight": Q.IQ1_S, "ffn_up.weight": Q.IQ1_S,
        "ffn_down.weight": FIRST(Q.Q4_0, Q.IQ4_NL),
    },
    "IQ1_M": {
        "token_embd.weight": Q.Q2_K, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ1_M, "attn_k.weight": Q.IQ1_M, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ2_XXS, "ffn_gate.weight": Q.IQ1_M, "ffn_up.weight": Q.IQ1_M,
        "ffn_down.weight": FIRST(Q.Q4_0, Q.IQ4_NL),
    },
    "IQ3_XXS": {  # with an imatrix: ffn_down keeps IQ3_XXS (then its fallback)
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q5_K,
        "attn_q.weight": Q.IQ2_S, "attn_k.weight": Q.IQ2_S, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ3_S, "ffn_gate.weight": Q.IQ3_XXS, "ffn_up.weight": Q.IQ3_XXS,
        "ffn_down.weight": Q.IQ4_NL,
    },
    "IQ3_XS": {  # default IQ3_S; gate/up of the middle layers (1..6) IQ3_XXS
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.IQ3_XXS, "attn_k.weight": Q.IQ3_XXS, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ3_S,
        "ffn_gate.weight": [Q.IQ3_S] + [Q.IQ3_XXS] * 6 + [Q.IQ3_S],
        "ffn_up.weight": [Q.IQ3_S] + [Q.IQ3_XXS] * 6 + [Q.IQ3_S],
        "ffn_down.weight": Q.IQ4_NL,
    },
    "IQ3_S": {
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.IQ3_S, "attn_k.weight": Q.IQ3_S, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.IQ3_S, "ffn_gate.weight": Q.IQ3_S, "ffn_up.weight": Q.IQ3_S,
        "ffn_down.weight": Q.IQ4_NL,
    },
    "IQ3_M": {  # layer 0's ffn_down is Q4_K, which falls back to Q5_0
        "token_embd.weight": Q.IQ3_S, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.IQ3_S, "attn_k.weight": Q.IQ3_S, "attn_v.weight": Q.Q4_K,
        "attn_output.weight": Q.Q4_K, "ffn_gate.weight": Q.IQ3_S, "ffn_up.weight": Q.IQ3_S,
        "ffn_down.weight": FIRST(Q.Q5_0, Q.IQ4_NL),
    },
    "TQ1_0": {
        "token_embd.weight": Q.Q4_K, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.TQ1_0, "attn_k.weight": Q.TQ1_0, "attn_v.weight": Q.TQ1_0,
        "attn_output.weight": Q.TQ1_0, "ffn_gate.weight": Q.TQ1_0, "ffn_up.weight": Q.TQ1_0,
        "ffn_down.weight": Q.Q4_0,
    },
    "TQ2_0": {
        "token_embd.weight": Q.Q4_K, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.TQ2_0, "attn_k.weight": Q.TQ2_0, "attn_v.weight": Q.TQ2_0,
        "attn_output.weight": Q.TQ2_0, "ffn_gate.weight": Q.TQ2_0, "ffn_up.weight": Q.TQ2_0,
        "ffn_down.weight": Q.Q4_0,
    },
    "Q2_0": {  # rows of 64: 1376 is not a multiple, so ffn_down falls back to Q4_0
        "token_embd.weight": Q.Q4_K, "output.weight": Q.Q6_K,
        "attn_q.weight": Q.Q2_0, "attn_k.weight": Q.Q2_0, "attn_v.weight": Q.Q2_0,
        "attn_output.weight": Q.Q2_0, "ffn_gate.weight": Q.Q2_0, "ffn_up.weight": Q.Q2_0,
        "ffn_down.weight": Q.Q4_0,
    },
    "MXFP4_MOE": {  # a dense model has no expert tensors: all Q8_0
        "token_embd.weight": Q.Q8_0, "output.weight": Q.Q8_0,
        "attn_q.weight": Q.Q8_0, "attn_k.weight": Q.Q8_0, "attn_v.weight": Q.Q8_0,
        "attn_output.weight": Q.Q8_0, "ffn_gate.weight": Q.Q8_0, "ffn_up.weight": Q.Q8_0,
        "ffn_down.weight": Q.Q8_0,
    },
}


@pytest.mark.parametrize("ftype", sorted(GQA4))
def test_gqa4_rows_not_multiple_of_256(ftype):
    t, f = model()
    plan = plan_quantization(t, f, ftype, imatrix=True)
    check(plan, GQA4[ftype])
    assert not plan.errors
    for e in plan:
        if not e.allowed:
            assert e.target_type is Q.F32 and not e.quantize
    fell = {e.name for e in plan if e.fallback}
    n_down_fallbacks = sum(1 for i in range(N_LAYER) if f"blk.{i}.ffn_down.weight" in fell)
    assert n_down_fallbacks == (0 if ftype == "MXFP4_MOE" else N_LAYER)
    assert plan.n_fallback == len(fell)


# model(n_head_kv=8, n_ff=1536, tied=True): no GQA, whole 256-blocks, tied embedding
NO_GQA_TIED = {
    "IQ2_XXS": {
        "token_embd.weight": Q.Q5_K,  # tied: the output's rule, not the token embedding's
        "attn_v.weight": Q.Q2_K, "attn_k.weight": Q.IQ2_XXS, "attn_output.weight": Q.IQ2_XXS,
        "ffn_down.weight": FIRST(Q.Q2_K, Q.IQ2_XXS),
    },
    "IQ2_M": {
        "token_embd.weight": Q.Q5_K,
        "attn_v.weight": Q.IQ3_S, "attn_q.weight": Q.IQ2_S, "attn_output.weight": Q.IQ3_S,
        "ffn_down.weight": FIRST(Q.IQ3_S, Q.IQ2_S),
    },
    "IQ1_M": {
        "token_embd.weight": Q.Q5_K,
        "attn_v.weight": Q.Q2_K, "attn_output.weight": Q.IQ2_XXS,
        "ffn_down.weight": FIRST(Q.Q2_K, Q.IQ1_M),
    },
    "IQ3_XXS": {
        "token_embd.weight": Q.Q5_K,
        "attn_v.weight": Q.IQ3_XXS, "attn_q.weight": Q.IQ2_S, "attn_output.weight": Q.IQ3_S,
        "ffn_down.weight": Q.IQ3_XXS,
    },
    "IQ3_XS": {
        "token_embd.weight": Q.Q6_K, "attn_v.weight": Q.IQ3_S, "ffn_down.weight": Q.IQ3_S,
    },
    "IQ3_M": {
        "token_embd.weight": Q.Q6_K, "attn_v.weight": Q.Q4_K, "ffn_down.weight": FIRST(Q.Q4_K, Q.IQ3_S),
    },
    "TQ2_0": {"token_embd.weight": Q.Q6_K, "attn_v.weight": Q.TQ2_0, "ffn_down.weight": Q.TQ2_0},
    "Q2_0": {"token_embd.weight": Q.Q6_K, "ffn_down.weight": Q.Q2_0},
    "Q1_0": {"token_embd.weight": Q.Q6_K, "attn_v.weight": Q.Q1_0, "ffn_down.weight": Q.Q1_0},
    "NVFP4": {"token_embd.weight": Q.Q6_K, "attn_q.weight": Q.NVFP4, "ffn_down.weight": Q.NVFP4},
    "MXFP4_MOE": {"token_embd.weight": Q.Q8_0, "attn_q.weight": Q.Q8_0},
}


@pytest.mark.parametrize("ftype", sorted(NO_GQA_TIED))
def test_no_gqa_tied_embedding(ftype):
    t, f = model(n_head_kv=8, n_ff=1536, tied=True)
    plan = plan_quantization(t, f, ftype, imatrix=True)
    check(plan, NO_GQA_TIED[ftype])
    assert not plan.errors and plan.n_fallback == 0


def test_iq3_xxs_without_imatrix_changes_the_mix():
    # no imatrix: attn_v IQ3_S, ffn_down Q4_K (first eighth) / Q3_K; the IQ2_S and IQ3_XXS
    # tensors still need one, so only a dry run gets through
    t, f = model(n_head_kv=8, n_ff=1536, tied=True)
    plan = plan_quantization(t, f, "IQ3_XXS", dry_run=True)
    check(plan, {"attn_v.weight": Q.IQ3_S, "ffn_down.weight": FIRST(Q.Q4_K, Q.Q3_K), "attn_k.weight": Q.IQ2_S})
    need = {e.name for e in plan if e.error}
    assert need == {
        f"blk.{i}.{n}.weight" for i in range(N_LAYER) for n in ("attn_q", "attn_k", "ffn_gate", "ffn_up")
    }
    assert "IQ2_S, IQ3_XXS" in plan.imatrix_error and "--imatrix" in plan.imatrix_error


def test_moe_low_bit_rules():
    t, f = model(n_expert=8, n_ff=512)
    plan = plan_quantization(t, f, "IQ2_XXS", imatrix=True)
    check(
        plan,
        {
            "attn_v.weight": Q.Q4_K,  # GQA 4 (and 8 experts >= 4)
            "attn_k.weight": Q.Q4_K,  # 8 experts
            "attn_output.weight": Q.Q5_K,  # 8 experts
            "attn_q.weight": Q.IQ2_XXS,
            "ffn_gate_exps.weight": Q.IQ2_XXS,
            "ffn_up_exps.weight": Q.IQ2_XXS,
            # this branch counts ffn_down tensors: the first of 8 is the first eighth
            "ffn_down_exps.weight": FIRST(Q.Q2_K, Q.IQ2_XXS),
            "ffn_gate_inp.weight": Q.F32,
        },
    )
    assert not plan["blk.0.ffn_gate_inp.weight"].allowed
    # 4 experts without GQA: attn_v still Q4_K (n_expert >= 4); attn_k and attn_output keep the mix
    t, f = model(n_head_kv=8, n_expert=4, n_ff=512)
    plan = plan_quantization(t, f, "IQ2_S", imatrix=True)
    check(plan, {"attn_v.weight": Q.Q4_K, "attn_k.weight": Q.IQ2_XS, "attn_output.weight": Q.IQ3_S})
    # IQ3_M with 8 experts: ffn_down Q4_K in the first eighth and on the layers that get more bits
    t, f = model(n_expert=8, n_ff=512)
    plan = plan_quantization(t, f, "IQ3_M")
    more = {0, 3, 6, 7}
    check(plan, {
        "ffn_down_exps.weight": [Q.Q4_K if i in more else Q.IQ3_S for i in range(N_LAYER)],
        "attn_output.weight": Q.Q5_K, "attn_v.weight": Q.Q8_0, "attn_k.weight": Q.Q8_0,
    })


def test_mxfp4_moe():
    t, f = model(n_expert=8, n_ff=512)
    plan = plan_quantization(t, f, "MXFP4_MOE")
    check(
        plan,
        {
            "token_embd.weight": Q.Q8_0, "output.weight": Q.Q8_0,
            "attn_q.weight": Q.Q8_0, "attn_v.weight": Q.Q8_0, "attn_output.weight": Q.Q8_0,
            "ffn_gate_exps.weight": Q.MXFP4, "ffn_up_exps.weight": Q.MXFP4, "ffn_down_exps.weight": Q.MXFP4,
            "ffn_gate_inp.weight": Q.F32,
        },
    )
    assert not plan.errors and not any(e.requires_imatrix for e in plan)
    # MXFP4 has no row-length fallback: 3-D experts with rows of 48 stop the run
    t, f = model(n_expert=8, n_ff=48)
    with pytest.raises(QuantizeError, match="no tensor type fallback is defined for type MXFP4"):
        plan_quantization(t, f, "MXFP4_MOE")
    # BailingMoE3: a 3-D tensor that is not an expert FFN stays Q8_0
    extra = TensorSpec("blk.0.attn_k_b.weight", (64, 128, 8))
    t, f = model(n_expert=8, n_ff=512)
    assert plan_quantization(t + [extra], f, "MXFP4_MOE")[extra.name].target_type is Q.MXFP4
    t, f = model(n_expert=8, n_ff=512, arch="bailingmoe3")
    plan = plan_quantization(t + [extra], f, "MXFP4_MOE")
    assert plan[extra.name].target_type is Q.Q8_0
    assert plan["blk.0.ffn_up_exps.weight"].target_type is Q.MXFP4


def test_no_fallback_types_and_f16():
    t, f = model()  # ffn_down rows of 1376: not whole Q1_0 (128) or NVFP4 (64) blocks
    for ft in ("Q1_0", "NVFP4"):
        with pytest.raises(QuantizeError, match="no tensor type fallback"):
            plan_quantization(t, f, ft)
    # rows of 48: not whole 32-blocks either, so IQ4_NL / Q4_0 fallbacks end at F16
    odd = [TensorSpec("blk.0.odd.weight", (48, 64))]
    t, f = model()
    for ft in ("IQ2_XS", "TQ1_0", "IQ3_S"):
        plan = plan_quantization(t + odd, f, ft, imatrix=True)
        assert plan["blk.0.odd.weight"].target_type is Q.F16 and plan["blk.0.odd.weight"].fallback


def test_file_type_ids():
    # llama.h's LLAMA_FTYPE_MOSTLY_* values
    ids = {
        "IQ2_XXS": 19, "IQ2_XS": 20, "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ3_S": 26, "IQ3_M": 27,
        "IQ2_S": 28, "IQ2_M": 29, "IQ1_M": 31, "TQ1_0": 36, "TQ2_0": 37, "MXFP4_MOE": 38, "NVFP4": 39,
        "Q1_0": 40, "Q2_0": 41,
    }
    for name, v in ids.items():
        assert FileType.parse(name) is FileType.parse(v) is FileType[name] and FileType[name] == v
        assert FileType.parse(f"llama_ftype_mostly_{name.lower()}") is FileType[name]
    gguf = pytest.importorskip("gguf")
    for ft in FileType:
        key = "ALL_F32" if ft is FileType.F32 else f"MOSTLY_{ft.name}"
        if ft is not FileType.COPY and key in gguf.LlamaFileType.__members__:
            assert gguf.LlamaFileType[key].value == ft.value, ft


# --------------------------------------------------------------------------
# importance matrix
# --------------------------------------------------------------------------

NEEDS_IMATRIX = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"]
NEEDS_NONE = ["IQ3_S", "IQ3_M", "TQ1_0", "TQ2_0", "Q2_0", "MXFP4_MOE", "Q2_K"]


@pytest.mark.parametrize("ftype", NEEDS_IMATRIX)
def test_refuses_without_imatrix(ftype):
    t, f = model()
    with pytest.raises(QuantizeError, match="requires an importance matrix") as e:
        plan_quantization(t, f, ftype)
    msg = str(e.value)
    assert "--imatrix" in msg and "--missing-imatrix" in msg and ftype in msg
    dry = plan_quantization(t, f, ftype, dry_run=True)
    assert dry.imatrix_error == msg
    needed = {e.target_type for e in dry if e.error}
    for t_ in needed:
        assert t_.name in msg
    assert needed <= {Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.Q2_K}
    # the token embedding and output never need one, whatever their type
    assert not dry["token_embd.weight"].error and not dry["output.weight"].error


@pytest.mark.parametrize("ftype", NEEDS_NONE)
def test_runs_without_imatrix(ftype):
    t, f = model(n_expert=8 if ftype == "MXFP4_MOE" else 0, n_ff=512 if ftype == "MXFP4_MOE" else 1376)
    plan = plan_quantization(t, f, ftype)
    assert not plan.errors and not plan.imatrix_error and not any(e.requires_imatrix for e in plan)


def test_all_tensors_lacking_an_entry_are_named():
    t, f = model()
    names = {s.name for s in t} - {"blk.3.attn_q.weight", "blk.3.ffn_up.weight", "blk.6.ffn_gate.weight",
                                   "blk.5.attn_v.weight", "output.weight"}
    with pytest.raises(QuantizeError) as e:
        plan_quantization(t, f, "IQ2_XS", imatrix=names)
    msg = str(e.value)
    # attn_v is Q4_K and output Q5_K: they need no entry
    for n in ("blk.3.attn_q.weight", "blk.3.ffn_up.weight", "blk.6.ffn_gate.weight"):
        assert n in msg
    assert "blk.5.attn_v.weight" not in msg and "output.weight" not in msg
    assert msg.startswith("missing importance matrix for tensor blk.3.attn_q.weight and 2 other tensor(s)")
    assert "--missing-imatrix" in msg
    plan = plan_quantization(t, f, "IQ2_XS", imatrix=names, dry_run=True)
    assert set(plan.lacking_imatrix) == {"blk.3.attn_q.weight", "blk.3.ffn_up.weight", "blk.6.ffn_gate.weight"}
    assert plan.imatrix_error == msg and len(plan.errors) == 3


def test_missing_imatrix_gives_exactly_those_tensors_the_type():
    t, f = model()
    lacking = {"blk.3.attn_q.weight", "blk.3.ffn_up.weight", "blk.0.ffn_down.weight"}
    names = {s.name for s in t} - lacking
    full = plan_quantization(t, f, "IQ2_XS", imatrix=True)
    plan = plan_quantization(t, f, "IQ2_XS", imatrix=names, missing_imatrix="q4_k")
    assert not plan.errors and plan.imatrix_error is None
    # blk.0.ffn_down is Q2_K -> Q4_0 (its fallback), which needs no entry: not lacking
    assert set(plan.lacking_imatrix) == {"blk.3.attn_q.weight", "blk.3.ffn_up.weight"}
    for e in plan:
        if e.name in plan.lacking_imatrix:
            assert e.target_type is Q.Q4_K and not e.requires_imatrix and not e.use_imatrix
            assert "missing_imatrix" in e.reason
        else:
            assert e.target_type is full[e.name].target_type, e.name
    # the dry run shows the same choice
    dry = plan_quantization(t, f, "IQ2_XS", imatrix=names, missing_imatrix="Q4_K", dry_run=True)
    assert dry.types() == plan.types()
    # no imatrix at all: every tensor that needs one gets the type
    plan = plan_quantization(t, f, "IQ1_S", missing_imatrix="IQ4_XS")
    got = {e.name: e.target_type for e in plan if "missing_imatrix" in e.reason}
    assert set(got) == set(plan.lacking_imatrix) and set(got.values()) == {Q.IQ4_XS}
    # ffn_down (rows of 1376) had already fallen back from IQ1_S to IQ4_NL: not lacking
    assert plan["blk.2.ffn_down.weight"].target_type is Q.IQ4_NL
    assert "blk.2.ffn_down.weight" not in plan.lacking_imatrix
    assert plan["blk.2.attn_output.weight"].target_type is Q.IQ4_XS  # was IQ2_XXS
    assert not plan.errors and not any(e.requires_imatrix for e in plan)


def test_missing_imatrix_type_must_need_none():
    t, f = model()
    for bad in ("IQ2_XXS", "IQ3_XXS", "IQ1_M"):
        with pytest.raises(ValueError, match="needs an importance matrix itself"):
            plan_quantization(t, f, "IQ2_XS", missing_imatrix=bad)
    with pytest.raises(ValueError, match="under Q2_K_S"):
        plan_quantization(t, f, "Q2_K_S", missing_imatrix="Q2_K")
    plan = plan_quantization(t, f, "IQ2_XS", missing_imatrix="Q2_K")
    assert plan["blk.1.attn_q.weight"].target_type is Q.Q2_K
    with pytest.raises(ValueError):
        plan_quantization(t, f, "IQ2_XS", missing_imatrix="Q9_K")


def test_tensor_already_in_its_type_needs_no_entry_with_an_imatrix():
    # llama-quantize checks entries only for tensors it converts (when an imatrix is given)
    t, f = model()
    t = [TensorSpec(s.name, s.ne, Q.IQ2_XS) if s.name == "blk.1.attn_q.weight" else s for s in t]
    names = {s.name for s in t} - {"blk.1.attn_q.weight"}
    plan = plan_quantization(t, f, "IQ2_XS", imatrix=names)
    assert not plan["blk.1.attn_q.weight"].quantize and not plan.errors
    with pytest.raises(QuantizeError, match="requires an importance matrix"):
        plan_quantization(t, f, "IQ2_XS")


# --------------------------------------------------------------------------
# --prune-layers
# --------------------------------------------------------------------------


def test_prune_renumbers_like_llama_quantize():
    t, f = model()
    plan = plan_quantization(t, f, "Q4_K_M", prune_layers=[5, 2])
    assert plan.block_count == 6
    assert len(plan.pruned) == 2 * 9 and all(n.startswith(("blk.2.", "blk.5.")) for n in plan.pruned)
    # 0, 1 keep their numbers; 3 -> 2, 4 -> 3, 6 -> 4, 7 -> 5
    src = {e.name: e.input_name for e in plan if e.name.endswith("attn_q.weight")}
    assert src == {f"blk.{new}.attn_q.weight": f"blk.{old}.attn_q.weight"
                   for new, old in enumerate([0, 1, 3, 4, 6, 7])}
    assert plan["blk.0.attn_q.weight"].source_name is None and plan["blk.2.attn_q.weight"].source_name
    assert "renumbered from blk.3.attn_q.weight" in plan["blk.2.attn_q.weight"].reason
    assert plan["output.weight"].input_name == "output.weight"
    assert [e.name for e in plan][:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
    # the importance entries follow the tensors: new blk.2 uses old blk.3's entry
    plan = plan_quantization(t, f, "Q4_K_M", prune_layers=[2, 5], imatrix={"blk.3.attn_q.weight"})
    assert plan["blk.2.attn_q.weight"].use_imatrix and not plan["blk.3.attn_q.weight"].use_imatrix
    # pruning layer 0 shifts everything down
    plan = plan_quantization(t, f, "Q8_0", prune_layers=[0])
    assert plan.block_count == 7 and plan["blk.0.attn_v.weight"].input_name == "blk.1.attn_v.weight"
    assert "blk.7.attn_v.weight" not in plan


def test_prune_keeps_the_input_layer_count_for_the_rules():
    # llama-quantize's rules use the input's n_layer (8): with layer 0 pruned, the first
    # ffn_down written (old layer 1) is still "the first eighth" by the tensor counter
    t, f = model()
    plan = plan_quantization(t, f, "IQ2_XXS", imatrix=True, prune_layers=[0])
    assert plan["blk.0.ffn_down.weight"].target_type is Q.Q4_0  # Q2_K, rows of 1376 -> Q4_0
    assert plan["blk.1.ffn_down.weight"].target_type is Q.IQ4_NL
    # but the attn_v count is of the tensors kept: 6 here, so Q4_K_M's "more bits" layers
    # are i < 6/8 = 0, i >= 42/8 = 5 and (i - 0) % 3 == 2: {2, 5}
    plan = plan_quantization(t, f, "Q4_K_M", prune_layers=[6, 7])
    got = [plan[f"blk.{i}.attn_v.weight"].target_type for i in range(6)]
    assert got == [Q.Q4_K, Q.Q4_K, Q.Q6_K, Q.Q4_K, Q.Q4_K, Q.Q6_K]


def test_prune_layer_errors():
    t, f = model()
    with pytest.raises(ValueError, match="has 8 layers"):
        plan_quantization(t, f, "Q8_0", prune_layers=[8])
    with pytest.raises(ValueError, match=">= 0"):
        plan_quantization(t, f, "Q8_0", prune_layers=[-1])
    with pytest.raises(ValueError, match="leave none"):
        plan_quantization(t, f, "Q8_0", prune_layers=list(range(8)))
    with pytest.raises(TypeError):
        plan_quantization(t, f, "Q8_0", prune_layers=[1.5])
    assert parse_prune_layers("3, 1,3") == [1, 3]
    for bad in ("a", "1,,2", "-2"):
        with pytest.raises(ValueError):
            parse_prune_layers(bad)
