"""The floor plan, read from the imports: every module imports only from its own room or rooms upstream of it
(data -> tokenizer -> model -> train / infer / export -> sft -> eval -> quickstart -> cli), lazy imports
inside functions included, and no two modules import each other, directly or around a circle."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alaya"
# a room may import from rooms of a lower rank, and from its own
RANK = {"fileio": 0, "configfile": 0, "prompt": 0, "recipe": 0, "data": 1, "tokenizer": 2, "model": 3, "train": 4,
        "infer": 4, "export": 4, "sft": 5, "eval": 6, "quickstart": 7, "cli": 8}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The alaya modules ``path`` imports (``from alaya.x import y`` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alaya"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.startswith("alaya") and n in MODULES}
    return found


FILES = {_module(p): p for p in SRC.rglob("*.py")}
MODULES = set(FILES)
GRAPH = {m: _imports(p) - {m} for m, p in FILES.items()}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else "alaya"


def test_every_room_has_a_rank():
    assert {_room(m) for m in MODULES} - {"alaya"} == set(RANK)


def test_nothing_imports_downstream():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
             if _room(m) != "alaya" and _room(t) != "alaya" and RANK[_room(t)] > RANK[_room(m)]]
    assert wrong == []


def test_no_import_circles_between_modules():
    # a package's __init__ is where its room's modules hang; an edge into it from its own room is not a circle
    def edges(m):
        return {t for t in GRAPH[m] if not (t == m.rsplit(".", 1)[0])}

    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(edges(m)):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert circles == []
