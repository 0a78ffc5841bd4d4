"""Each instruction check with passing and failing responses, and the pass-rate report."""
import pytest

from wildreward.dpo.checks import CHECKS, run_checks

BY_ID = {c.id: c for c in CHECKS}

EXAMPLES = {
    "max_words_20": (["Sunlight scatters off air molecules, and blue light scatters most.",
                      " ".join(["word"] * 20)],
                     [" ".join(["word"] * 21), "", "   "]),
    "keywords": (["The maple leaves fall. The harvest is in.", "MAPLE syrup after the Harvest."],
                 ["The maple leaves fall.", "Maples and harvesting season.", "harvest only"]),
    "json_key": (['{"capital": "Paris"}', '```json\n{"capital": "Paris", "country": "France"}\n```',
                  '  {"capital": null}  '],
                 ['The capital is Paris.', '{"city": "Paris"}', '["capital", "Paris"]',
                  'Sure! {"capital": "Paris"}', '{"capital": "Paris"']),
    "bullets_3": (["- Better sleep\n- More energy\n- Lower stress", "Benefits:\n* a\n* b\n  * c"],
                  ["- a\n- b", "- a\n- b\n- c\n- d", "1. a\n2. b\n3. c", "**a**\n**b**\n**c**",
                   "---\n- a\n- b"]),
    "end_phrase": (["Keep a regular schedule. Is there anything else I can help with?",
                    "Dim the lights.\nIs there anything else I can help with?  \n"],
                   ["Is there anything else I can help with? Keep a schedule.",
                    "Dim the lights. Is there anything else I can help with"]),
    "lowercase": (["cats are soft, curious and 100% independent.", "a cat naps."],
                  ["Cats are soft.", "cats love the UK.", "123 !!", ""]),
    "uppercase": (["A RAINBOW IS LIGHT SPLIT INTO COLOURS BY RAINDROPS.", "ROYGBIV: 7 COLOURS."],
                  ["A rainbow is light.", "A RAINBOW IS LIGHt.", "42", ""]),
    "no_commas": (["I sleep late. I read a book. I walk by the sea.", "Rest and read."],
                  ["I sleep late, then read.", "", "..."]),
    "paragraphs_2": (["The ocean is vast.\n\nIt covers most of Earth.", "One.\n  \nTwo.\n"],
                     ["The ocean is vast. It is deep.", "One.\n\nTwo.\n\nThree.", "One.\nTwo."]),
    "title": (["<<Rain Song>>\nDrops on the glass\n...", "Here: <<rain>>"],
              ["Rain Song\nDrops...", "<< >>", "<<>>", "<<split\ntitle>>"]),
}


def test_every_check_has_examples():
    assert set(EXAMPLES) == set(BY_ID) and len(CHECKS) == 10
    assert all(c.prompt.strip() for c in CHECKS)


@pytest.mark.parametrize("check_id", sorted(EXAMPLES))
def test_check_pass_and_fail_examples(check_id):
    passing, failing = EXAMPLES[check_id]
    for text in passing:
        assert BY_ID[check_id].passes(text), text
    for text in failing:
        assert not BY_ID[check_id].passes(text), text


def test_run_checks_rates_and_think_blocks():
    responses = {cid: [ex[0][0], ex[1][0]] for cid, ex in EXAMPLES.items()}  # one pass, one fail each
    responses["lowercase"] = "<think>The User wants LOWERCASE.</think>\n\na cat naps."  # only the answer counts
    responses["uppercase"] = [EXAMPLES["uppercase"][1][0]] * 3
    rates = run_checks(responses)
    assert rates["lowercase"] == 1.0 and rates["uppercase"] == 0.0 and rates["keywords"] == 0.5
    assert rates["overall"] == pytest.approx((8 * 0.5 + 1.0 + 0.0) / 10)
    assert set(rates) == set(BY_ID) | {"overall"}


def test_run_checks_needs_exactly_the_check_ids():
    complete = {cid: ex[0][0] for cid, ex in EXAMPLES.items()}
    assert run_checks(complete)["overall"] == 1.0
    with pytest.raises(ValueError, match="missing \\['title'\\]"):
        run_checks({k: v for k, v in complete.items() if k != "title"})
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        run_checks({**complete, "nope": "x"})
    with pytest.raises(ValueError, match="no response"):
        run_checks({**complete, "title": []})
