"""The static-cache decoding backend (``--decode-path graphs``, gpt-fast's design): greedy output equal to the
model's own forward and to transformers, the same shapes at every step (no recompilation within a bucket,
counted with dynamo's counters), and the static cache's attention equal to the growing cache's."""
import copy

import pytest
import torch

from alaya.infer.backends import BUCKET, GraphBackend, TorchBackend, choose_backend, decode_step_seconds
from alaya.infer.generate import BatchDecoder, GenerationConfig, generate
from alaya.model.mpt import AlayaForCausalLM, KVCache

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [100]]


@pytest.fixture(scope="module")
def models():
    from alaya.model.config import ModelConfig

    torch.manual_seed(0)
    # 6 heads (MPT's slope interleaving), a context of two buckets
    ref = AlayaForCausalLM(ModelConfig(d_model=48, n_heads=6, n_layers=2, vocab_size=320, max_seq_len=2 * BUCKET))
    ref.eval().requires_grad_(False)
    with torch.no_grad():
        ref.transformer.wte.weight.mul_(3)  # peaked logits: greedy ties are out of reach
    torch._dynamo.reset()
    return ref, GraphBackend(copy.deepcopy(ref))


@torch.inference_mode()
def test_a_static_cache_step_gives_the_growing_cache_logits(models):
    ref, _ = models
    B, L, cap = 3, 9, 32
    ids = torch.randint(4, 320, (B, L))
    mask = torch.ones(B, cap, dtype=torch.bool)
    mask[1, :4] = False  # left padding in row 1
    grow = ref.new_cache(B, cap)
    static = ref.new_cache(B, cap)
    static.keys.zero_(), static.values.zero_()  # as GraphBackend makes it: unwritten positions hold zeros, not NaN
    ref(ids, attention_mask=mask[:, :L], cache=grow)
    ref(ids, attention_mask=mask[:, :L], cache=static)
    for step in range(5):
        tok = torch.randint(4, 320, (B, 1))
        expect, _ = ref(tok, attention_mask=mask[:, : L + step + 1], cache=grow)
        position = torch.tensor([L + step])
        got, _ = ref(tok, attention_mask=mask, cache=KVCache(static.keys, static.values, position=position))
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one new token per row"):
        ref(torch.ones(B, 2, dtype=torch.long), attention_mask=mask, cache=KVCache(static.keys, static.values,
                                                                                   position=torch.tensor([0])))


def test_greedy_output_equals_the_torch_path_and_transformers(models, tmp_path):
    from transformers import MptForCausalLM

    from alaya.model.hf import save_model

    ref, graphs = models
    cfg = GenerationConfig(max_new_tokens=24, temperature=0, eos_token_id=-1)
    ours = generate(graphs, PROMPTS, cfg)
    assert ours == generate(TorchBackend(ref), PROMPTS, cfg)
    save_model(ref, tmp_path)
    theirs = MptForCausalLM.from_pretrained(tmp_path).eval()
    for prompt, tokens in zip(PROMPTS, ours):  # one row at a time: no padding on transformers' side
        out = theirs.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                              pad_token_id=2, eos_token_id=2, bad_words_ids=[[3]])
        assert out[0, len(prompt):].tolist() == tokens


def test_no_recompilation_over_100_steps_and_three_prompt_lengths_in_one_bucket(models):
    from torch._dynamo.utils import counters

    _, graphs = models
    cfg = GenerationConfig(max_new_tokens=100, temperature=0, eos_token_id=-1)
    prompts = [[7] * n for n in (5, 40, 120)]  # prompt + 100 new tokens: one bucket of 256 positions
    assert {graphs.capacity(len(p) + 100) for p in prompts} == {BUCKET}
    generate(graphs, [prompts[0]], cfg)  # compiles this bucket's step, if no earlier test did
    before = dict(counters["stats"])
    for p in prompts:
        decoder = BatchDecoder(graphs, [p], cfg)
        steps = sum(1 for _ in decoder)
        assert steps == 100 and decoder.finish_reason == ["length"]
    assert dict(counters["stats"]) == before  # no new frame compiled, no new graph


def test_new_buckets_are_not_new_compilations(models):
    """The batch and the capacity are symbolic in the compiled step: after one compilation for one row and
    one for several, buckets of other batch sizes and capacities reuse it (on CUDA they are new graph
    recordings of the same code, not minutes of compiling). Greedy output stays the torch path's."""
    from torch._dynamo.utils import counters

    ref, graphs = models
    cfg = GenerationConfig(max_new_tokens=6, temperature=0, eos_token_id=-1)
    generate(graphs, [PROMPTS[0]], cfg)
    generate(graphs, PROMPTS[:2], cfg)
    before = dict(counters["stats"])
    for rows, length in ((3, 5), (5, 5), (2, 300), (4, 300)):  # capacities 256 and 512
        prompts = [[9 + i] * length for i in range(rows)]
        assert generate(graphs, prompts, cfg) == generate(TorchBackend(ref), prompts, cfg)
    # the batch rounded up to a power of two: 3 rows decode in a 4-row cache, 5 in an 8-row one
    assert set(graphs._buckets) == {(4, BUCKET), (8, BUCKET), (2, 2 * BUCKET), (4, 2 * BUCKET)}
    assert dict(counters["stats"]) == before


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(models):
    ref, graphs = models
    sampled = GenerationConfig(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=3)
    alone = generate(graphs, [PROMPTS[0]], sampled)[0]
    unseeded = GenerationConfig(max_new_tokens=16, temperature=0.9)
    mixed = generate(graphs, PROMPTS, [sampled, unseeded, unseeded])
    assert mixed[0] == alone == generate(TorchBackend(ref), [PROMPTS[0]], sampled)[0]


def test_a_new_bucket_is_a_new_cache_and_the_least_recent_is_dropped(models):
    _, graphs = models
    assert graphs.capacity(1) == BUCKET and graphs.capacity(BUCKET + 1) == 2 * BUCKET
    assert graphs.capacity(2 * BUCKET) == 2 * BUCKET  # never beyond the model's context
    a = graphs.new_cache(2, BUCKET)
    assert a.keys.shape[1] == 2 and a.keys.shape[3] == BUCKET
    first = a.keys.data_ptr()
    del a  # that run is over: the next one gets the same buffers (the same graph)
    assert graphs.new_cache(2, BUCKET).keys.data_ptr() == first


def test_a_batch_decodes_in_a_power_of_two_rows_and_its_extra_rows_change_nothing(models):
    """Rows are rounded up (1, 2, 4, 8, ...): a server's changing batch sizes make a few CUDA-graph
    recordings, not one per size. The extra rows see only themselves; every real row decodes what it decodes
    alone on the torch path, greedy and seeded."""
    from alaya.infer.backends import graph_rows

    assert [graph_rows(b) for b in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]
    ref, graphs = models
    prompts = [[11 + i] * (3 + 4 * i) for i in range(5)]  # five rows of different lengths: a cache of 8 rows
    for cfg in (GenerationConfig(max_new_tokens=10, temperature=0, eos_token_id=-1),
                GenerationConfig(max_new_tokens=10, temperature=0.8, top_p=0.9, seed=4, eos_token_id=-1)):
        decoder = BatchDecoder(graphs, prompts, cfg)
        assert decoder.cache.keys.shape[1] == 5 and graphs._lent[id(decoder.cache)].keys.shape[1] == 8
        for _ in decoder:
            pass
        assert decoder.tokens == [generate(TorchBackend(ref), [p], cfg)[0] for p in prompts]


def test_graphs_is_a_decode_path_of_its_own():
    m = AlayaForCausalLM(__import__("alaya.model.config", fromlist=["ModelConfig"]).ModelConfig(
        d_model=32, n_heads=2, n_layers=1, vocab_size=300, max_seq_len=64))
    assert isinstance(choose_backend(m, "graphs"), GraphBackend)
    assert choose_backend(m, "graphs").describe() == "graphs (cpu)"


def test_loading_with_decode_path_graphs_serves_what_the_torch_path_serves(model_dir):
    """`alaya serve --decode-path graphs`: the server's scheduler decodes its batches through the same
    compiled step, and answers what the torch path answers."""
    from alaya.infer.loading import load_for_inference
    from alaya.infer.scheduler import BatchScheduler, Job

    graphs, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32", decode_path="graphs")
    torch_path, _ = load_for_inference(str(model_dir), device="cpu", dtype="float32", decode_path="torch")
    assert isinstance(graphs, GraphBackend) and type(torch_path) is TorchBackend
    cfg = GenerationConfig(max_new_tokens=12, temperature=0, eos_token_id=tok.eos_id, banned_token_ids=[3])
    prompts = [tok.encode(p) for p in ("The model", "你好", "a longer prompt, in English")]
    answers = {}
    for name, backend in (("graphs", graphs), ("torch", torch_path)):
        engine = BatchScheduler(backend, tok, max_batch=3, start=False)
        jobs = [Job(p, cfg) for p in prompts]
        engine._decode(jobs)  # one batch of three, as the worker thread runs it
        answers[name] = [j.new_ids for j in jobs]
    assert answers["graphs"] == answers["torch"] and all(answers["torch"])


def test_two_decoding_runs_alive_at_once_each_keep_their_own_cache(models):
    ref, graphs = models
    cfg = GenerationConfig(max_new_tokens=20, temperature=0, eos_token_id=-1)
    a = BatchDecoder(graphs, [PROMPTS[0]], cfg)  # the same bucket: (1 row, 256 positions)
    b = BatchDecoder(graphs, [PROMPTS[1]], cfg)
    assert a.cache.keys.data_ptr() != b.cache.keys.data_ptr()
    for _ in zip(a, b):  # interleaved, step by step
        pass
    torch_path = TorchBackend(ref)
    assert [a.tokens[0], b.tokens[0]] == [generate(torch_path, [p], cfg)[0] for p in PROMPTS[:2]]
    del a, b  # the runs are over: the bucket's own cache is lent again
    c = BatchDecoder(graphs, [PROMPTS[2]], cfg)
    assert c.cache.keys.data_ptr() == graphs._bucket(1, BUCKET).keys.data_ptr()


def test_the_overlapped_loop_through_the_graphs_path_decodes_what_the_torch_path_decodes(models):
    """The accelerator's loop (tokens fed back as a device tensor, the next graph step queued before they are
    read) through the static-cache steps gives the torch path's tokens."""
    ref, graphs = models
    cfg = GenerationConfig(max_new_tokens=16, temperature=0, eos_token_id=-1)
    decoder = BatchDecoder(graphs, PROMPTS, cfg)
    decoder.overlap = True
    for _ in decoder:
        pass
    assert decoder.tokens == generate(TorchBackend(ref), PROMPTS, cfg)


def test_the_compiled_step_mutates_only_its_static_buffers(models, monkeypatch):
    """What CUDA-graph trees need to replay the step as one graph: every input the step writes (the KV cache)
    is a static input (a buffer, fixed address), so inductor does not skip the graph for "mutated inputs";
    the inputs copied in at each replay are the fed tokens [B, 1], the position [1] and the mask [B, capacity].
    Read from inductor's own bookkeeping, on the CPU, with the backend CUDA gets (cudagraphs on)."""
    import torch._inductor.compile_fx as cfx

    ref, _ = models
    compiled = []

    def inner(gm, example_inputs, **kw):
        out = cfx.compile_fx_inner(gm, example_inputs, **kw)
        compiled.append((set(kw.get("static_input_idxs", ())), set(out.mutated_input_idxs), example_inputs))
        return out

    def backend(gm, example_inputs):
        return cfx.compile_fx(gm, example_inputs, inner_compile=inner, config_patches={"triton.cudagraphs": True})

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, mode=None, **kw: real_compile(m, backend=backend, **kw))
    graphs = GraphBackend(copy.deepcopy(ref))
    cfg = GenerationConfig(max_new_tokens=4, temperature=0, eos_token_id=-1)
    # a cached graph skips inner_compile (the configs' own patch: monkeypatch would delete their keys on undo)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        assert generate(graphs, PROMPTS, cfg) == generate(TorchBackend(ref), PROMPTS, cfg)
    assert len(compiled) == 1  # one graph: fullgraph, no break
    static, mutated, inputs = compiled[0]
    def fits(x, want):  # shapes compared where inductor kept a size concrete (others are symbols: dynamic=True)
        got = [str(d) for d in x.shape]
        return len(got) == len(want) and all(not d.isdigit() or int(d) == w for d, w in zip(got, want))

    c, rows = ref.config, 4  # three prompts decode in a 4-row cache
    cache = (c.n_layers, rows, c.n_heads, BUCKET, c.head_dim)
    assert len(mutated) == 2 and all(fits(inputs[i], cache) for i in mutated)  # keys and values
    assert mutated <= static
    copied = [x for i, x in enumerate(inputs) if i not in static and isinstance(x, torch.Tensor)]
    assert len(copied) == 3  # the position [1], the tokens [rows, 1] and the mask [rows, capacity]
    for want in [(1,), (rows, 1), (rows, BUCKET)]:
        assert any(fits(x, want) for x in copied), want


def test_warming_up_leaves_a_servers_first_batches_nothing_to_compile(model_dir, monkeypatch, capsys):
    """`alaya serve --decode-path graphs` compiles (and on CUDA records) its step for every row count of its
    batches before it listens: afterwards batches of 1 to --max-batch rows compile nothing."""
    import uvicorn
    from torch._dynamo.utils import counters

    from alaya.infer import server

    torch._dynamo.reset()
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)  # everything serve() does but listening
    seen = {}
    real = server.BatchScheduler

    def keep(backend, *a, **kw):
        seen["backend"] = backend
        return real(backend, *a, **kw)
    monkeypatch.setattr(server, "BatchScheduler", keep)
    server.serve(str(model_dir), device="cpu", dtype="float32", decode_path="graphs", max_batch=5)
    out = capsys.readouterr().out
    assert "compiling the decoding step for batches of up to 5" in out and "ready after" in out
    graphs = seen["backend"]
    assert graphs.warm_up_rows(5) == [1, 2, 4, 8] and {rows for rows, _ in graphs._buckets} == {1, 2, 4, 8}
    before = dict(counters["stats"])
    cfg = GenerationConfig(max_new_tokens=4, temperature=0, eos_token_id=-1)
    for rows in (1, 3, 5):
        generate(graphs, [[9, 10, 11]] * rows, cfg)
    decode_step_seconds(graphs)  # auto's timed pass (its mask made in inference mode) reuses it too
    assert dict(counters["stats"]) == before
    assert TorchBackend(graphs.model).warm_up_rows(5) == []  # nothing to compile on the torch path
