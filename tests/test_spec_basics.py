"""Basic ModelSpec behaviour on the DeepSeek-V3 preset."""

import ctxsim


def test_deepseek_v3_mla_cache_is_one_latent():
    spec = ctxsim.load_model("deepseek-v3")
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) values x 2 bytes (bf16).
    assert spec.n_layer == 61
    assert spec.kv_bytes_per_token("bf16") == 61 * (512 + 64) * 2


def test_import_does_not_load_torch_or_streamlit():
    import subprocess
    import sys

    code = "import sys, ctxsim; ctxsim.load_model('deepseek-v3'); print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
