"""The real server on a free localhost port, driven by the official openai client, raw HTTP and schemathesis."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from alaya.infer.generate import GenerationConfig
from alaya.infer.loading import load_for_inference
from alaya.infer.scheduler import BatchScheduler, Job, QueueFull
from alaya.prompt import format_prompt
from conftest import start_server

openai = pytest.importorskip("openai")
KEY = "test-key"


@pytest.fixture(scope="module")
def server(model_dir):
    proc, url = start_server(model_dir, "--api-key", KEY, "--max-batch", "4", "--model-name", "alaya-test")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


def post(url, body, key=KEY, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openai_client_chat_completion_and_models(client):
    assert [m.id for m in client.models.list().data] == ["alaya-test"]
    r = client.chat.completions.create(model="alaya-test", messages=[{"role": "user", "content": "你好"}],
                                       max_tokens=7, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 7 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens == len(load_tok().encode(format_prompt("你好")))


def load_tok():
    return TOK["tok"]


TOK = {}


@pytest.fixture(autouse=True)
def _tok(model_dir):
    if "tok" not in TOK:
        TOK["model"], TOK["tok"] = load_for_inference(str(model_dir))


def test_streaming_equals_non_streaming_for_greedy(client):
    kw = dict(model="alaya-test", messages=[{"role": "system", "content": "你是Alaya"}, {"role": "user", "content": "hello"}],
              max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.rstrip() == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def in_process(prompt: str, max_new: int) -> tuple[str, str]:
    """Greedy text and finish reason of a raw prompt, decoded in this process as the server decodes it."""
    from alaya.infer.generate import BatchDecoder
    from alaya.infer.text import StreamedText

    tok = TOK["tok"]
    gen = GenerationConfig(max_new_tokens=max_new, temperature=0.0, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                           banned_token_ids=[tok.reserved_id])
    decoder = BatchDecoder(TOK["model"], [tok.encode(prompt)], gen)
    return StreamedText(decoder, tok).texts()[0], decoder.finish_reason[0]


def test_completions_stop_seed_and_stream(client):
    kw = dict(model="alaya-test", prompt="The model", max_tokens=20, temperature=0)
    full = client.completions.create(**kw).choices[0]
    assert (full.text, full.finish_reason) == in_process("The model", 20)
    # the test model (random weights, embeddings ×3) writes 20 tokens without </s>: a stop string is in reach
    assert full.finish_reason == "length" and len(full.text) >= 6, full
    stop = full.text[3:6]
    cut = client.completions.create(**kw, stop=[stop]).choices[0]
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert streamed == full.text
    sampled = [client.completions.create(**{**kw, "temperature": 1.0}, seed=5).choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed makes sampling reproducible


def test_a_server_on_the_cpu_kernels_path_answers_what_the_torch_path_answers(model_dir):
    """The module's server runs on the pinned torch path; this one on the compiled CPU kernels, on purpose."""
    proc, url = start_server(model_dir, "--model-name", "alaya-test", env={"ALAYA_CPU_PATH": "kernels"})
    try:
        kernels = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        prompts = ["The model", "你好", "a longer prompt, in English, to decode from"]
        got = [kernels.completions.create(model="alaya-test", prompt=p, max_tokens=12, temperature=0).choices[0].text
               for p in prompts]
        assert got == [in_process(p, 12)[0] for p in prompts]
        assert json.loads(urllib.request.urlopen(url + "/health").read())["decode_path"] == "kernels"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_published_qa_endpoint(server):
    status, body = post(server + "/qa", {"instruction": "你好", "history": ["你是谁", "我是Alaya"],
                                         "temperature": 0, "repetition_penalty": 1.0, "top_p": 0.9})
    assert status == 200 and set(body) == {"output", "org_output"}
    assert body["org_output"].startswith(format_prompt("你好", ["你是谁", "我是Alaya"]))
    status, body = post(server + "/qa", {"instruction": "x", "history": ["only one"]})
    assert status == 400 and "history" in body["error"]["message"]


def test_api_key_and_invalid_requests_get_clear_4xx(server):
    assert post(server + "/v1/completions", {"prompt": "x"}, key=None)[0] == 401
    assert post(server + "/v1/completions", {"prompt": "x"}, key="wrong")[0] == 401
    # open without the key: exactly the chat page, the health check and the schema (README and the guides say so)
    for path in ("/", "/health", "/openapi.json"):
        assert urllib.request.urlopen(server + path).status == 200, path
    assert json.loads(urllib.request.urlopen(server + "/openapi.json").read())["info"]["title"] == "Alaya"
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(server + "/v1/models")
    with pytest.raises(urllib.error.HTTPError, match="404"):  # /docs is off: its page would load scripts from a CDN
        urllib.request.urlopen(urllib.request.Request(server + "/docs", headers={"Authorization": f"Bearer {KEY}"}))
    cases = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}, "context"),
        ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1}, "frequency_penalty"),
    ]
    for body, word in cases:
        status, err = post(server + "/v1/chat/completions", body)
        assert status == 400, (body, err)
        assert word in err["error"]["message"], (body, err)


def test_many_parallel_clients_lose_no_request_and_batching_does_not_change_greedy_output(server, client):
    prompts = [f"问题 {i}: what is {i} + {i}?" for i in range(24)]

    def ask(p):
        return client.completions.create(model="alaya-test", prompt=p, max_tokens=10, temperature=0).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, prompts))
    # every answer is what the prompt gets decoded alone, in this process
    assert answers == [in_process(p, 10)[0] for p in prompts]
    health = json.loads(urllib.request.urlopen(server + "/health").read())
    assert health["batches"] < health["completed"]  # some requests were decoded together
    assert health["decode_path"] == "torch (cpu)"  # the tests pin the CPU path (conftest)


def test_a_client_that_disconnects_stops_its_generation(tmp_path, model_dir):
    # a model with a long context, so that one request runs for seconds
    from alaya.model.hf import load_model, save_model
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.tokenizer import AlayaTokenizer

    small = load_model(model_dir)
    long_ctx = AlayaForCausalLM(small.config.replace(max_seq_len=4096))
    long_ctx.load_state_dict(small.state_dict())
    save_model(long_ctx, tmp_path / "long", tokenizer=AlayaTokenizer.load(model_dir))
    proc, url = start_server(tmp_path / "long")
    try:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "go on and on", "max_tokens": 4000, "ignore_eos": True, "stream": True}).encode()
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert b"200 OK" in s.recv(4096)
        for _ in range(100):
            health = json.loads(urllib.request.urlopen(url + "/health").read())
            if health["cancelled"]:
                break
            time.sleep(0.1)
        assert health["cancelled"] == 1 and health["completed"] == 0
        assert health["tokens"] < 4000  # it stopped early
        # and the server goes on serving
        assert post(url + "/v1/completions", {"prompt": "hi", "max_tokens": 3}, key=None)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_full_queue_answers_429(model_dir):
    proc, url = start_server(model_dir, "--max-batch", "1", "--max-queue", "1")
    try:
        def ask(_):
            return post(url + "/v1/completions", {"prompt": "hello", "max_tokens": 100, "temperature": 1.0}, key=None)[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(ask, range(8)))
        assert statuses.count(200) >= 1 and statuses.count(429) >= 1
        assert set(statuses) <= {200, 429}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_engine_queue_is_bounded():
    model, tok = TOK["model"], TOK["tok"]
    engine = BatchScheduler(model, tok, max_batch=2, max_queue=2, start=False)
    cfg = GenerationConfig(max_new_tokens=4)
    engine.submit(Job([5, 6], cfg))
    engine.submit(Job([5, 6], cfg))
    with pytest.raises(QueueFull):
        engine.submit(Job([5, 6], cfg))
    with pytest.raises(ValueError, match="context"):
        BatchScheduler(model, tok, start=False).submit(Job([5] * 100, GenerationConfig(max_new_tokens=100)))


@pytest.mark.skipif(shutil.which("st", path=os.path.dirname(sys.executable)) is None, reason="schemathesis not installed")
def test_schemathesis_finds_no_server_error(server):
    st = os.path.join(os.path.dirname(sys.executable), "st")
    out = subprocess.run([st, "run", server + "/openapi.json", "--checks", "not_a_server_error", "--max-examples", "30",
                          "-H", f"Authorization: Bearer {KEY}", "--seed", "1", "--request-timeout", "60",
                          "--phases", "examples,coverage,fuzzing"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_completions_echo_logprobs_are_the_models_prompt_logprobs(server, model_dir):
    """echo + logprobs (lm-eval's local-completions request) returns log P(token | prefix) for every
    prompt token, as one plain forward pass computes them; token-id prompts and batches of them work."""
    import torch
    import torch.nn.functional as F

    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    ids = tok.encode("Alaya reads 中文 and English.")
    status, body = post(server + "/v1/completions", {"prompt": [ids, ids[:4]], "max_tokens": 0, "echo": True,
                                                     "logprobs": 2, "temperature": 0})
    assert status == 200, body
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids]))[0][0].float(), -1)
    want = [None] + [float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    first, second = body["choices"]
    got = first["logprobs"]["token_logprobs"]
    assert got[0] is None and got[1:] == pytest.approx(want[1:], abs=1e-4)
    assert len(second["logprobs"]["token_logprobs"]) == 4 and second["index"] == 1
    assert all(len(t) == 2 for t in first["logprobs"]["top_logprobs"][1:])
    assert first["text"] == tok.decode(ids) and body["usage"]["completion_tokens"] == 0
    status, body = post(server + "/v1/completions", {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1,
                                                     "temperature": 0})
    assert status == 200 and len(body["choices"][0]["logprobs"]["token_logprobs"]) == len(ids) + 1
    status, body = post(server + "/v1/completions", {"prompt": [10 ** 9], "max_tokens": 1})
    assert status == 400 and "token ids" in body["error"]["message"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_guides_serve_example_works_pasted_as_one_block(lang, model_dir, tmp_path):
    """The shell block of docs/*/serving.md that starts `alaya serve` in the background, run as written (the
    model folder and port swapped for the test's): it waits for the server, then every curl gets its answer."""
    import re

    from conftest import REPO, free_port

    text = (REPO / "docs" / lang / "serving.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "until curl" in b)
    port = str(free_port())
    script = block.replace("alaya-quickstart/model", str(model_dir)).replace("8000", port)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(["bash", "-c", "set -e\n" + script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    # the whole reply is one JSON object, the stream its events, /qa one JSON object
    # the server's own log lines are beside them: the replies are the JSON lines and the events
    objects = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    events = [l[len("data: "):] for l in out.stdout.splitlines() if l.startswith("data: ")]
    assert len(objects) == 2, out.stdout[-2000:]
    assert objects[0]["object"] == "chat.completion" and objects[0]["choices"][0]["message"]["role"] == "assistant"
    assert events[-1] == "[DONE]" and all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])
    assert set(objects[1]) == {"output", "org_output"}  # /qa
