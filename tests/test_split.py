import json
import random
import subprocess
import sys

import pytest

from wildreward.extract.split import assign_test_conversations


def make_conversations(n: int = 500, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    return {f"conv{i:04d}": rng.randint(1, 9) for i in range(n)}


def test_same_input_same_split_whatever_the_order():
    convs = make_conversations()
    items = list(convs.items())
    random.Random(1).shuffle(items)
    shuffled = dict(items)
    assert list(shuffled) != list(convs)
    assert assign_test_conversations(convs, 300, seed=0) == assign_test_conversations(shuffled, 300, seed=0)


def test_split_is_stable_across_processes():
    """A salted hash() would give a different split in a fresh interpreter with another PYTHONHASHSEED."""
    convs = make_conversations(200)
    code = ("import json,sys; from wildreward.extract.split import assign_test_conversations as a; "
            "print(json.dumps(sorted(a(json.loads(sys.argv[1]), 150, 3))))")
    outputs = {
        subprocess.run([sys.executable, "-c", code, json.dumps(convs)], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": hash_seed}).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == sorted(assign_test_conversations(convs, 150, seed=3))


@pytest.mark.parametrize("test_size", [1, 10, 100, 1000])
def test_size_bounds(test_size):
    convs = make_conversations()
    test = assign_test_conversations(convs, test_size, seed=0)
    rows = sum(convs[c] for c in test)
    assert rows >= test_size
    # The conversation that crossed test_size adds at most its own rows, so the overshoot is below the largest one.
    assert rows < test_size + max(convs.values())
    assert test <= set(convs)


def test_overshoot_is_at_most_the_last_conversation():
    """Three 1-row conversations and one of 50 rows, test_size 2: the shortest prefix of the hash order that
    reaches 2 rows is two small ones (2 rows), the big one first (50), or a small one then the big one (51)."""
    convs = {"a": 1, "b": 1, "c": 50, "d": 1}
    seen_big = set()
    for seed in range(20):
        test = assign_test_conversations(convs, 2, seed)
        rows = sum(convs[c] for c in test)
        assert rows in {2, 50, 51}
        assert (rows == 2) == ("c" not in test)
        seen_big.add("c" in test)
    assert seen_big == {True, False}


def test_whole_conversations_no_leakage():
    convs = make_conversations()
    turns = [(cid, k) for cid, n in convs.items() for k in range(n)]
    test = assign_test_conversations(convs, 400, seed=5)
    test_turns = [t for t in turns if t[0] in test]
    train_turns = [t for t in turns if t[0] not in test]
    assert {c for c, _ in test_turns}.isdisjoint({c for c, _ in train_turns})
    assert len(test_turns) + len(train_turns) == len(turns)
    assert len(test_turns) == sum(convs[c] for c in test)


def test_edge_sizes():
    convs = make_conversations(50)
    assert assign_test_conversations(convs, 0, seed=0) == set()
    assert assign_test_conversations(convs, sum(convs.values()), seed=0) == set(convs)
    assert assign_test_conversations(convs, 10**6, seed=0) == set(convs)
    assert assign_test_conversations({}, 10, seed=0) == set()


def test_seed_changes_the_split():
    convs = make_conversations()
    splits = [frozenset(assign_test_conversations(convs, 300, seed)) for seed in range(5)]
    assert len(set(splits)) == 5
