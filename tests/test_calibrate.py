"""Calibrating a bot's hand-off bar: the choice on known rows, and `ragtune calibrate` end to end."""

import json

import pytest

from conftest import EXAMPLES, run_cli
from ragtune.errors import InputError
from ragtune.evaluate.calibrate import choose, outcome
from ragtune.settings import Settings

S = Settings(min_support=0.6, min_support_agreed=0.5, min_support_value=0.4)  # reliefs 0.1 and 0.2


def row(support, answerable, correct=True, agreed=False, abstained=False, typed=False):
    return {"answerable": answerable, "correct": answerable and correct and not abstained, "abstained": abstained,
            "evidence": {"support": support, "agreed": agreed, "typed": typed}}


ROWS = [row(0.9, True), row(0.7, True), row(0.58, True), row(0.56, True, correct=False),
        row(0.3, False), row(0.5, False), row(0.55, False), row(0.65, False)]


def test_outcome_counts_answers_above_the_bar_and_hand_offs_below():
    o = outcome(ROWS, 0.6, S)
    assert o.answer_accuracy == 0.5 and o.abstention_accuracy == 0.75
    low = outcome(ROWS, 0.0, S)
    assert low.answer_accuracy == 0.75 and low.abstention_accuracy == 0.0
    # an agreed best passage needs only the lower bar; a hand-off for disagreeing sources stays one
    agreed = [row(0.52, True, agreed=True), row(0.95, False, abstained=True)]
    assert outcome(agreed, 0.6, S).answer_accuracy == 1.0
    assert outcome(agreed, 0.0, S).abstention_accuracy == 1.0
    # a passage stating the kind of value asked for needs 0.2 less; with agreement too, 0.3 less
    typed = [row(0.42, True, typed=True), row(0.32, True, typed=True, agreed=True), row(0.38, False, typed=True)]
    o = outcome(typed, 0.6, S)
    assert o.answer_accuracy == 1.0 and o.abstention_accuracy == 1.0


def test_choose_meets_the_target_then_answers_most_and_sits_mid_gap():
    best = choose(ROWS, 0.75, S)
    # 0.65 may be answered (3 of 4 unanswerable still handed off); 0.58 and 0.7 and 0.9 right
    assert best.abstention_accuracy == 0.75 and best.answer_accuracy == 0.75
    assert 0.56 < best.bar <= 0.58 and best.bar == pytest.approx((0.56 + 0.58) / 2, abs=1e-6)
    strict = choose(ROWS, 1.0, S)
    assert strict.abstention_accuracy == 1.0 and 0.65 < strict.bar <= 0.7 and strict.answer_accuracy == 0.5
    # equally good bars: the middle one
    flat = [row(0.9, True), row(0.1, False)]
    assert 0.1 < choose(flat, 1.0, S).bar < 0.9


def test_choose_needs_both_kinds_of_question():
    with pytest.raises(InputError, match="unanswerable"):
        choose([row(0.9, True)], 0.85, 0.1)
    with pytest.raises(InputError, match="unanswerable"):
        choose([row(0.9, False)], 0.85, 0.1)


def test_cli_calibrate_saves_the_bar_the_bot_then_uses(home):
    questions = EXAMPLES / "helpcenter" / "questions-v1.jsonl"
    run_cli(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"))
    dry = json.loads(run_cli(home, "calibrate", "--questions", str(questions), "--dry-run", "--json").stdout)
    assert not dry["saved"] and dry["questions"] == dry["answerable"] + dry["unanswerable"] == 30
    assert dry["previous"]["min_support"] == 0.6  # nothing saved before: the setting
    chosen = dry["chosen"]
    assert chosen["abstention_accuracy"] >= 0.85 or chosen["abstention_accuracy"] == 1.0
    assert chosen["answer_accuracy"] >= dry["previous"]["answer_accuracy"] or \
        dry["previous"]["abstention_accuracy"] < 0.85
    saved = json.loads(run_cli(home, "calibrate", "--questions", str(questions), "--json").stdout)
    assert saved["saved"] and saved["chosen"] == chosen
    again = json.loads(run_cli(home, "calibrate", "--questions", str(questions), "--dry-run", "--json").stdout)
    assert again["previous"] == chosen  # the bot's own bar is what it now answers with
    # the bot's bar decides (this question's support is about 0.64, above the 0.6 setting): 0.95 hands off (0.85
    # when the retrievers agree: the setting's relief moves with it); --reset gives the setting back
    from ragtune.store.sqlite import SQLiteStore

    with SQLiteStore(home / "ragtune.db") as store:
        store.update_bot_settings(store.get_bot("default"), {"min_support": 0.95})
    q = "Can I cancel my subscription at any time?"  # asks for no kind of value: no relief for that

    def ask():
        return json.loads(run_cli(home, "ask", q, "--model", "echo", "--json").stdout)

    first = ask()
    assert first["abstained"] and 0.6 < first["evidence"]["support"] < 0.85 and not first["evidence"]["typed"]
    run_cli(home, "calibrate", "--reset")
    assert not ask()["abstained"]


def test_cli_calibrate_bad_input_is_one_line(home, tmp_path):
    run_cli(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"))
    only = tmp_path / "only.jsonl"
    only.write_text('{"question": "How long does a charge take?", "answers": ["4.5 hours"], "source": "battery-care.md"}\n')
    for args, words in [(["calibrate"], "--questions"), (["calibrate", "--questions", str(only), "--target", "2"], "--target"),
                        (["calibrate", "--questions", str(only), "--split", "all"], "unanswerable"),
                        (["calibrate", "--questions", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
                        (["calibrate", "--questions", str(only), "--bot", "nobody"], "unknown bot")]:
        p = run_cli(home, *args, check=False)
        assert p.returncode != 0 and words in p.stderr, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
