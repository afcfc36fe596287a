"""Every fast path computes the same function as the plain path (issue 5), checked on the CPU.

Why: a speed-up is only worth having if it changes nothing but the speed. Each switch the
trainer and sampler expose (channels_last, bf16 autocast, torch.compile, foreach/fused
AdamW, the foreach EMA, attention through SDPA) is compared here with the plain
computation on a small network whose zero-initialised layers are filled with random values
(a fresh difflab U-Net outputs exactly 0, which would make every comparison vacuous).

Tolerances: layout changes and kernel choices are float32 rounding (<= 1e-4 relative);
bf16 autocast carries 8 mantissa bits (relative rounding 2^-9 per operation, compounded over
~20 layers), so the network output is compared at a relative error (L2) of 3e-2 (measured here
1.8e-2 on the small test network) and DDIM-5 images at 3e-2 relative (measured 0.9e-2) and a
largest pixel difference under 5% of the [-1, 1] range (measured 0.034).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from difflab.build import build_loss, build_network, build_schedule
from difflab.config import TrainConfig
from difflab.diffusion import make_denoiser
from difflab.generation import autocast_for
from difflab.network.layers import SelfAttention
from difflab.samplers import sample_ddim
from difflab.training.ema import EMA
from difflab.training.speed import compile_or_eager

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = dict(image_size=16, channels=32, dim_mults="1,2", res_blocks=1, attn_resolutions="8", timesteps=100,
             data="random", out="unused")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill the zero-initialised layers (residual-branch ends, attention projections, head)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.abs().sum():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def small_setup(**overrides):
    torch.manual_seed(0)
    config = TrainConfig(**{**SMALL, **overrides})
    model = randomize(build_network(config, 3))
    return config, model


def inputs(batch: int = 4, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator).float()
    return x, t


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def gradients(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient, flattened into one vector."""
    return torch.cat([p.grad.flatten() for p in model.parameters()])


# ---- channels_last --------------------------------------------------------------------------
def test_channels_last_forward_matches_contiguous():
    _, model = small_setup()
    x, t = inputs()
    with torch.no_grad():
        plain = model(x, t)
        fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        fast = fast_model(x.contiguous(memory_format=torch.channels_last), t)
    assert plain.abs().mean() > 1e-3, "the network must compute something for the test to mean anything"
    assert relative_error(fast, plain) < 1e-5


def test_channels_last_training_step_matches_contiguous():
    """Loss and every gradient of one training step (same noise, same timesteps)."""
    config, model = small_setup()
    loss_fn = build_loss(config, build_schedule(config))
    x0 = inputs(seed=2)[0].clamp(-1, 1)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        net = copy.deepcopy(model).to(memory_format=memory_format)
        loss = loss_fn(net, x0.contiguous(memory_format=memory_format), torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(float(loss_a - loss_b)) <= 1e-5 * abs(float(loss_a))
    assert relative_error(torch.cat([g.flatten() for g in grads_b]), torch.cat([g.flatten() for g in grads_a])) < 1e-4
    # Per tensor too, with a floor: biases right before a GroupNorm have (mathematically) zero
    # gradient, so theirs are rounding noise (~1e-9) in both layouts.
    floor = 1e-6 * max(float(g.abs().max()) for g in grads_a)
    for ga, gb in zip(grads_a, grads_b):
        assert float((gb - ga).abs().max()) <= 1e-3 * float(ga.abs().max()) + floor


# ---- bf16 autocast ----------------------------------------------------------------------------
def test_bf16_autocast_forward_within_bf16_tolerance():
    _, model = small_setup()
    x, t = inputs()
    with torch.no_grad():
        plain = model(x, t)
        with autocast_for(torch.device("cpu"), "bf16"):
            fast = model(x, t)
    assert fast.dtype == torch.bfloat16, "autocast must actually run the convolutions in bf16"
    assert relative_error(fast, plain) < 3e-2


def test_bf16_autocast_training_loss_within_bf16_tolerance():
    config, model = small_setup()
    loss_fn = build_loss(config, build_schedule(config))
    x0 = inputs(seed=2)[0].clamp(-1, 1)
    with torch.no_grad():
        plain = loss_fn(model, x0, torch.Generator().manual_seed(3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = loss_fn(model, x0, torch.Generator().manual_seed(3))
    assert fast.dtype == torch.float32, "the loss is reduced in float32 under autocast"
    assert abs(float(fast - plain)) < 2e-2 * abs(float(plain))


def test_sampling_with_autocast_matches_without():
    """DDIM-5 from the same noise, bf16 autocast on vs off (as `difflab sample --precision`)."""
    config, model = small_setup()
    model.eval()
    schedule = build_schedule(config)
    denoiser = make_denoiser(model, schedule, config.objective, config.clip)
    noise = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    device = torch.device("cpu")
    outputs = []
    for precision in ("no", "bf16"):
        with torch.inference_mode(), autocast_for(device, precision):
            outputs.append(sample_ddim(denoiser, noise.clone(), schedule, steps=5))
    plain, fast = outputs
    assert plain.dtype == fast.dtype == torch.float32, "samplers keep x in float32 under autocast"
    assert plain.std() > 0.05
    assert relative_error(fast, plain) < 3e-2
    assert float((fast - plain).abs().max()) < 0.05 * 2  # images live in [-1, 1]: 5% of the range


# ---- attention through SDPA ------------------------------------------------------------------
def test_sdpa_attention_matches_written_out_attention():
    torch.manual_seed(0)
    layer = randomize(SelfAttention(128, head_channels=32))
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        fast = layer(x)
        b, c, h, w = x.shape
        heads, d = layer.num_heads, c // layer.num_heads
        qkv = layer.qkv(layer.norm(x)).reshape(b, 3, heads, d, h * w)  # channels ordered (3, heads, d)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (b, heads, d, L)
        weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / d**0.5, dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(b, c, h, w)
        plain = x + layer.proj(out)
    assert relative_error(fast - x, plain - x) < 1e-4


# ---- optimizer kernels and EMA ---------------------------------------------------------------
@pytest.mark.parametrize("kernel", [{"foreach": True}, {"fused": True}])
def test_adamw_fast_kernels_match_the_for_loop(kernel):
    """The trainer uses fused AdamW on CUDA and foreach on the CPU; both must equal the plain loop.
    The same real gradients are fed to both (recomputing them would let rounding noise in the
    mathematically-zero gradients of biases before a GroupNorm decide the comparison)."""
    _, model = small_setup()
    x, t = inputs()
    F.mse_loss(model(x, t), x).backward()
    gradients = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    params = {}
    for name, options in (("plain", {"foreach": False}), ("fast", kernel)):
        net = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01, **options)
        for step in range(3):
            for p, g in zip(net.parameters(), gradients):
                p.grad = g * (1.0 + 0.5 * step)
            optimizer.step()
        params[name] = [p.detach().clone() for p in net.parameters()]
    for a, b in zip(params["plain"], params["fast"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_foreach_ema_matches_the_per_parameter_formula():
    _, model = small_setup()
    ema = EMA(model, decay=0.9, warmup=True)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * step)
        decay = ema.current_decay()
        expected = [e * decay + p.detach() * (1 - decay) for e, p in zip(expected, model.parameters())]
        ema.update(model, step)
    for e, s in zip(expected, ema.shadow.parameters()):
        torch.testing.assert_close(s, e, rtol=1e-6, atol=1e-6)


# ---- torch.compile ---------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("DIFFLAB_TEST_COMPILE") != "1",
                    reason="torch.compile needs a C compiler and takes 30-120 s on this CPU; "
                           "set DIFFLAB_TEST_COMPILE=1 to run")
def test_compiled_network_matches_eager():
    _, model = small_setup()
    x, t = inputs()
    compiled = compile_or_eager(copy.deepcopy(model), (x, t), enabled=True)
    assert compiled is not model and type(compiled).__name__ == "OptimizedModule", "compile fell back to eager"
    eager_out = model(x, t)
    compiled_out = compiled(x, t)
    assert relative_error(compiled_out, eager_out) < 1e-4
    eager_out.square().mean().backward()
    compiled_out.square().mean().backward()
    assert relative_error(gradients(compiled), gradients(model)) < 1e-3


@pytest.mark.parametrize("scope", ["whole", "blocks"])
def test_compile_falls_back_to_eager_when_the_compiler_fails(monkeypatch, scope):
    _, model = small_setup()

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="training eagerly"):
        network = compile_or_eager(model, inputs(), enabled=True, scope=scope)
    assert network is model
    assert all(block._compiled_call_impl is None for block in model.compile_regions()), "no block is left compiled"


# ---- regional compilation (--compile-scope blocks) and the compile cache (--compile-cache) ------
def traced_by_aot_eager(monkeypatch) -> None:
    """torch.compile through Dynamo and AOT autograd only (the aot_eager backend): the graphs and
    their reuse are the real ones; Inductor's code generation, minutes on this CPU, is left out."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: real_compile(
        module, backend="aot_eager", **{k: v for k, v in kwargs.items() if k != "mode"}))


def region_signatures(model: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> list[tuple]:
    """One signature per compile region: its class, its parameters' shapes and its inputs' shapes,
    i.e. what Dynamo's guards on a shared forward tell apart."""
    signatures, hooks = [], []
    for block in model.compile_regions():
        shapes = tuple(tuple(p.shape) for p in block.parameters())
        hooks.append(block.register_forward_pre_hook(
            lambda module, args, shapes=shapes: signatures.append(
                (type(module).__name__, shapes, tuple(tuple(a.shape) for a in args)))))
    with torch.no_grad():
        model(*example)
    for hook in hooks:
        hook.remove()
    return signatures


def test_block_compiled_network_matches_eager_and_shares_graphs(monkeypatch):
    from torch._dynamo.utils import counters

    _, model = small_setup(res_blocks=2)  # two equal blocks at 16 px and at 8 px: graphs to share
    x, t = inputs()
    signatures = region_signatures(model, (x, t))
    traced_by_aot_eager(monkeypatch)
    torch._dynamo.reset()
    counters.clear()
    fast = copy.deepcopy(model)
    network = compile_or_eager(fast, (x, t), enabled=True, scope="blocks")
    assert network is fast, "blocks are compiled in place: the module, its state_dict keys and checkpoints stay"
    assert list(fast.state_dict()) == list(model.state_dict())
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == len(set(signatures)) < len(signatures), \
        f"{len(signatures)} regions, {len(set(signatures))} distinct, {graphs} graphs compiled"
    eager_out, fast_out = model(x, t), network(x, t)
    assert relative_error(fast_out.detach(), eager_out.detach()) < 1e-5
    eager_out.square().mean().backward()
    fast_out.square().mean().backward()
    assert counters["stats"]["unique_graphs"] == graphs, "the second pass recompiled"
    assert relative_error(gradients(fast), gradients(model)) < 1e-4


@pytest.mark.parametrize("argv,message", [
    (["--compile-scope", "layers"], "--compile-scope must be one of auto, whole, blocks"),
    (["--compile-cache", "FILE"], "--compile-cache must be auto, off or a folder"),
    (["--model", "stylegan2", "--image-size", "16", "--compile-scope", "blocks"],
     "--compile-scope blocks is for the U-Net families"),
])
def test_compile_options_are_checked_before_any_work(tmp_path, capsys, argv, message):
    from difflab.cli.main import main

    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "never-created"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "shapes", "--out", str(out), *[str(tmp_path / "file") if a == "FILE" else a for a in argv]])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_compile_cache_folder_is_where_documented(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    from difflab.training.speed import COMPILE_CACHE_VARIABLE, compile_cache

    monkeypatch.delenv(COMPILE_CACHE_VARIABLE, raising=False)  # also restores the user's value afterwards
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    documented = tmp_path / "xdg" / "difflab" / "inductor"
    with compile_cache("auto", enabled=False) as folder:  # not compiling: nothing made, nothing set
        assert folder is None and COMPILE_CACHE_VARIABLE not in os.environ
    assert not documented.exists()
    with compile_cache("auto") as folder:
        assert folder == documented and documented.is_dir()
        assert os.environ[COMPILE_CACHE_VARIABLE] == str(documented.resolve())
    assert COMPILE_CACHE_VARIABLE not in os.environ, "set only while difflab compiles"
    monkeypatch.setenv(COMPILE_CACHE_VARIABLE, str(tmp_path / "users"))
    with compile_cache("auto") as folder:  # the user's own setting wins
        assert folder == tmp_path / "users"
    with compile_cache(str(tmp_path / "named")) as folder:
        assert os.environ[COMPILE_CACHE_VARIABLE] == str((tmp_path / "named").resolve())
    assert os.environ[COMPILE_CACHE_VARIABLE] == str(tmp_path / "users")
    with compile_cache("off") as folder:
        assert folder is None and not inductor_config.fx_graph_cache
    assert inductor_config.fx_graph_cache


@pytest.mark.parametrize("setting", ["on", "off"])
def test_training_makes_the_cache_folder_only_when_it_compiles(tmp_path, monkeypatch, setting):
    from difflab.training import train
    from difflab.training.speed import COMPILE_CACHE_VARIABLE

    monkeypatch.delenv(COMPILE_CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    seen = []

    def record(module, **kwargs):  # stands in for the compiler: notes the cache folder, stays eager
        seen.append(os.environ.get(COMPILE_CACHE_VARIABLE))
        return module

    monkeypatch.setattr(torch, "compile", record)
    config = TrainConfig.from_dict({**SMALL, "data": "shapes", "out": str(tmp_path / "run"), "batch_size": 4,
                                    "steps": 1, "save_every": 1, "grid_images": 0, "workers": 0,
                                    "compile": setting, "compile_scope": "blocks"}).validate()
    train(config, progress=False)
    documented = tmp_path / "xdg" / "difflab" / "inductor"
    assert documented.is_dir() == (setting == "on")
    assert seen == ([str(documented.resolve())] * len(seen) if setting == "on" else [])
    assert len(seen) == (len(build_network(config, 3).compile_regions()) if setting == "on" else 0)


# ---- the benchmark scripts themselves (tiny, no peer) ------------------------------------------
@pytest.fixture()
def bench_modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_sample
        import bench_train
        yield bench_train, bench_sample
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_bench_scripts_run_without_a_peer(bench_modules, tmp_path):
    bench_train, bench_sample = bench_modules
    tiny = ["--device", "cpu", "--channels", "32", "--dim-mults", "1,2", "--res-blocks", "1",
            "--attn-resolutions", "8", "--image-size", "16", "--peer", "none", "--no-measure-peak",
            "--precision", "fp32"]
    train = bench_train.main([*tiny, "--batch", "2", "--steps", "2", "--warmup", "1",
                              "--json-out", str(tmp_path / "train.json")])
    sample = bench_sample.main([*tiny, "--n", "2", "--batch", "2", "--steps", "2", "--warmup-steps", "1"])
    assert train["rows"][0]["images_per_s"] > 0 and train["rows"][0]["forward_gflops_per_image"] > 0
    assert sample["rows"][0]["n"] == 2 and (tmp_path / "train.json").is_file()


def test_a_peer_timed_two_ways_is_compared_at_its_faster_timing(bench_modules):
    """Issue 17: the peer both ways, as its Trainer runs (synced every step) and at its best
    (pipelined); difflab's ratio is against the faster row, and the targets say so."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_all
        import bench_common
        from peers import peer_common
    finally:
        sys.path.remove(str(BENCHMARKS))
    rows = [{"bench": "train 64px b64", "side": "difflab", "images_per_s": 4700.0, "mfu": 0.2},
            {"bench": "train 64px b64", "side": "lucidrains (synced every step, as its Trainer)", "images_per_s": 653.0},
            {"bench": "train 64px b64", "side": "lucidrains (pipelined, its best)", "images_per_s": 940.0},
            {"bench": "DDIM-50 1000 img", "side": "difflab", "images_per_s": 400.0, "seconds": 2.5, "n": 1000}]
    bench_common.add_ratios(rows)
    assert rows[0]["ratio"] == pytest.approx(5.0) and rows[0]["ratio_against"] == rows[2]["side"]
    assert rows[1]["ratio"] is None and rows[2]["ratio"] is None and "ratio" not in rows[3]  # no peer: no ratio
    targets = bench_all.check_targets(rows)
    assert targets[0].startswith("training b64: 5.00x the peer's faster timing, lucidrains (pipelined, its best) "
                                 "(target >= 5x): PASS")
    assert targets[1].startswith("DDIM-50, 1000 images: 2.50 s (target <= 2.6 s): PASS; no peer row")

    calls = []
    per_step = peer_common.time_pipelined(lambda: calls.append(1), 7, torch.device("cpu"), blocks=3)
    assert len(per_step) == 3 and len(calls) == 6 and all(t >= 0 for t in per_step)  # 3 blocks of 7 // 3 steps
    stats = peer_common.pipelined_stats([0.5, 0.25, 1.0], batch=64)
    assert stats["step_s_pipelined"] == 0.5 and stats["images_per_s_pipelined"] == 128


def test_profile_of_the_runs_training_step_on_the_cpu(tmp_path):
    """benchmarks/profile_train_step.py end to end on a tiny eager run (the GPU profile is issue
    17's first measurement): both clocks, the operator table by kind, FLOPs and MFU; and the kinds
    of real CUDA kernel names."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import profile_train_step
    finally:
        sys.path.remove(str(BENCHMARKS))
    tiny = {"batch_size": 2, "image_size": 16, "channels": 16, "dim_mults": "1,2", "res_blocks": 1,
            "attn_resolutions": "8", "compile": "off"}
    report = profile_train_step.main(["--device", "cpu", "--threads", "1", "--options", json.dumps(tiny), "--steps", "3",
                                      "--warmup", "1", "--profile-steps", "1", "--flop-steps", "1", "--out", str(tmp_path)])
    assert report["step_s_pipelined"] > 0 and report["step_s_synced"] > 0 and report["train_flops_per_image"] > 0
    assert sum(report["kinds_s"].values()) == pytest.approx(report["kernel_s_per_step"])
    assert report["kinds_s"]["convolution and matrix products"] > 0 and 0 < report["mfu"] < 1
    assert "| step, pipelined (as the loop runs) |" in (tmp_path / "profile-train-step.md").read_text()
    kinds = {name: profile_train_step.category(name) for name in (
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc",
        "triton_red_fused_native_group_norm_silu_12", "triton_poi_fused_add_mul_silu_3",
        "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>",
        "void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>",
        "void at::native::elementwise_kernel<128, 2, direct_copy_kernel_cuda>", "some_new_kernel")}
    assert list(kinds.values()) == ["convolution and matrix products", "normalisation and other reductions",
                                    "pointwise", "attention", "optimiser, EMA, gradient clipping",
                                    "copies and layout changes", "other"]


def test_compile_time_benchmark_runs_its_eager_reference(tmp_path):
    """benchmarks/compile_time.py end to end on its eager row (a compiled row takes minutes here)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compile_time
    finally:
        sys.path.remove(str(BENCHMARKS))
    tiny = {k: SMALL[k] for k in ("image_size", "channels", "dim_mults", "res_blocks", "attn_resolutions")}
    report = compile_time.main(["--device", "cpu", "--batch", "2", "--steps", "1", "--warmup", "1", "--threads", "1",
                                "--variants", "", "--config", json.dumps(tiny), "--out", str(tmp_path)])
    (row,) = report["rows"]
    assert not row["compile"] and row["steady_step_s"] > 0 and row["parameters"] < 10**6
    assert "| eager | off |" in (tmp_path / "compile-time.md").read_text()


def test_compile_time_levers_are_checked_before_any_work_and_labelled(tmp_path, capsys):
    """--levers names boolean run options: a misspelt one stops the script before it measures; a
    lever's row carries its name into the table."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compile_time
    finally:
        sys.path.remove(str(BENCHMARKS))
    with pytest.raises(SystemExit):
        compile_time.main(["--levers", "channels_lst", "--out", str(tmp_path)])
    assert "--levers: 'channels_lst' is not a boolean run option" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option, but not a switch
        compile_time.main(["--levers", "batch_size"])
    assert not (tmp_path / "compile-time.json").exists()
    tiny = {k: SMALL[k] for k in ("image_size", "channels", "dim_mults", "res_blocks", "attn_resolutions")}
    row = compile_time.measure(compile_time.parse_args([
        "--child", "--compile", "off", "--lever", "cudnn_benchmark", "--device", "cpu", "--batch", "2", "--steps", "1",
        "--warmup", "1", "--threads", "1", "--config", json.dumps(tiny)]))
    assert row["lever"] == "cudnn_benchmark"
    assert "| eager +cudnn_benchmark | off |" in compile_time.table([{"cache": "-", **row}])


def test_cudnn_benchmark_switch_sets_the_flag_on_cuda_only():
    from difflab.config import TrainConfig
    from difflab.training.speed import set_cudnn_benchmark

    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        set_cudnn_benchmark(TrainConfig(cudnn_benchmark=True), torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False  # the CPU has no cuDNN to time
        set_cudnn_benchmark(TrainConfig(cudnn_benchmark=True), torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is True
        set_cudnn_benchmark(TrainConfig(), torch.device("cuda"))  # off by default, and switched back off
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


# ---- sampling fast paths (generation/fast.py) --------------------------------------------------
def test_low_precision_copy_matches_the_float32_network_and_leaves_it_untouched():
    from difflab.generation.fast import LowPrecisionNetwork

    _, model = small_setup()
    before = [p.detach().clone() for p in model.parameters()]
    x, t = inputs()
    with torch.no_grad():
        reference = model(x, t)
        # The outer autocast must not matter: the copy runs outside it, in its own dtype.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = LowPrecisionNetwork(model, torch.bfloat16)(x, t)
    assert fast.dtype == torch.bfloat16
    assert relative_error(fast, reference) < 3e-2
    assert all(p.dtype == torch.float32 and torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_cuda_graph_wrapper_is_the_plain_network_off_the_gpu():
    from difflab.generation.fast import CUDAGraphNetwork

    _, model = small_setup()
    x, t = inputs()
    with torch.inference_mode():
        assert torch.equal(CUDAGraphNetwork(model)(x, t), model(x, t))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_matches_eager_on_fresh_inputs():
    from difflab.generation.fast import CUDAGraphNetwork

    _, model = small_setup()
    model = model.cuda()
    graphed = CUDAGraphNetwork(model)
    with torch.inference_mode():
        for seed in range(3):  # the first call captures; later ones replay with new inputs
            x, t = (v.cuda() for v in inputs(seed=seed))
            torch.testing.assert_close(graphed(x, t), model(x, t), rtol=1e-4, atol=1e-4)


def test_sampling_speed_switches():
    from difflab.errors import ConfigError
    from difflab.generation.fast import resolve_sampling_speed

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_sampling_speed(cpu, "bf16", "auto", "auto", 10**6) == \
        resolve_sampling_speed(cpu, "bf16", "off", "off", 0)  # nothing switches on for a CPU under auto
    fast = resolve_sampling_speed(cuda, "bf16", "auto", "auto", 4000)  # DDPM-1000 on 1,000 images
    assert (fast.low_precision, fast.compile, fast.cuda_graphs) == (torch.bfloat16, True, True)
    short = resolve_sampling_speed(cuda, "no", "auto", "off", 200)  # DDIM-50 on 1,000 images
    assert (short.low_precision, short.compile, short.cuda_graphs) == (None, False, False)
    with pytest.raises(ConfigError, match="cuda_graphs"):
        resolve_sampling_speed(cpu, "no", "auto", "sometimes")


def test_sampling_compiles_into_the_compile_cache_folder(tmp_path, monkeypatch):
    """--compile-cache for the generation commands, as for train: a call with a new shape (the
    one that compiles) runs with TORCHINDUCTOR_CACHE_DIR on the folder; a repeated shape runs
    outside, and the variable is restored. A folder that cannot be one fails before any work."""
    from difflab.errors import ConfigError
    from difflab.generation.fast import _FallbackOnError, resolve_sampling_speed

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/users/own")
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, t):
            seen.append(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
            return x

    network = _FallbackOnError(Recorder(), Recorder(), str(tmp_path / "cache"))
    x, t = inputs()
    network(x, t), network(x, t), network(x[:1], t[:1])
    folder = str((tmp_path / "cache").resolve())
    assert seen == [folder, "/users/own", folder] and (tmp_path / "cache").is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/users/own"

    assert resolve_sampling_speed(torch.device("cuda"), "no", "on", "off", 0, "off").compile_cache == "off"
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="compile_cache"):
        resolve_sampling_speed(torch.device("cpu"), "no", "off", "off", 0, str(tmp_path / "a-file"))


def test_compiled_sampling_network_falls_back_to_eager(monkeypatch):
    from difflab.generation.fast import SamplingSpeed, fast_network

    _, model = small_setup()

    def compile_that_fails_at_the_first_call(module, **kwargs):
        def broken(*args):
            raise RuntimeError("no Triton")
        return broken

    monkeypatch.setattr(torch, "compile", compile_that_fails_at_the_first_call)
    network = fast_network(model, SamplingSpeed(None, compile=True, cuda_graphs=False))
    x, t = inputs()
    with torch.no_grad(), pytest.warns(UserWarning, match="sampling eagerly"):
        out = network(x, t)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x, t))


def test_training_speed_switches_follow_the_measured_rules():
    from difflab.training.speed import should_compile, use_cuda_graphs

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not should_compile("auto", cpu, steps=10**6)  # never on a CPU under auto
    assert should_compile("auto", cuda, steps=20_000)
    assert not should_compile("auto", cuda, steps=500)  # too short to pay ~80 s back
    assert not should_compile("auto", cuda, steps=10**6, max_minutes=1)
    assert should_compile("on", cpu, steps=1) and not should_compile("off", cuda)
    assert use_cuda_graphs("auto", True, cuda) and not use_cuda_graphs("auto", False, cuda)
    assert use_cuda_graphs("on", False, cuda) and not use_cuda_graphs("on", True, cpu)
    assert not use_cuda_graphs("auto", True, cuda, processes=2)
