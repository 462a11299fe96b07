"""What healing says while it runs and when it ends (ui/guide.py, from heal's progress dict and HealResult.ended):
the steps it ran, of how many, and why it stopped; never "step 0/?, about 0 s left" before its first step."""
import pytest

from ui.guide import ENDED, heal_line, heal_status


def test_before_the_first_step_it_says_what_it_does_not_a_made_up_count():
    done, text = heal_status({}, 30, 5.0)
    assert done == 0.0 and "0 of 30 steps run" in text and "time cap 5 min" in text
    assert "?" not in text and "s left" not in text


def test_while_the_static_fit_labels_its_texts_it_says_how_many():
    done, text = heal_status({"labeled": 4096, "texts": 91434}, 1600, 15.0)
    assert done == 0.0 and "labels the texts once, 4,096 of 91,434" in text and "time cap 15 min" in text
    done, text = heal_status({"labeled": 91370, "texts": 91434, "step": 3, "steps": 1600}, 1600, 15.0)
    assert "3 of 1600 steps run" in text and "labels" not in text  # the steps, once they run


def test_while_it_runs_the_steps_of_how_many_and_the_time_left():
    done, text = heal_status({"step": 8, "steps": 30, "loss": 0.125, "dev": 0.9, "seconds_left": 40.4}, 30, 0.5)
    assert done == pytest.approx(8 / 30)
    assert "8 of 30 steps run" in text and "loss 0.1250" in text and "dev 0.9000" in text
    assert "about 40 s left" in text and "time cap 0.5 min" in text and "at this pace" not in text  # 30 fit
    done, text = heal_status({"step": 6, "steps": 60, "seconds_left": 240.0, "cap_left": 240.0, "per_step": 10.0},
                             60, 5.0)  # 6 steps in 60 s, 240 s before the cap: 24 more
    assert "at this pace about 30 of 60 steps will run before the cap" in text
    # the steps finish long before the cap (a newcomer saw "about 1 of 10 steps will run" at step 1 of 10 that all ran)
    done, text = heal_status({"step": 1, "steps": 10, "dev": 0.631, "dev_step": 0, "seconds_left": 81.0,
                              "cap_left": 2690.0, "per_step": 9.0}, 10, 45.0)
    assert "at this pace" not in text and "about 81 s left" in text
    assert "dev 0.6310 (at step 0)" in text  # the last dev check, with its step: not mistaken for this step's
    done, text = heal_status({"step": 30, "steps": 30, "seconds_left": 0.0}, 30, 5.0)
    assert done == 1.0 and "final dev check" in text and "0 s left" not in text


@pytest.mark.parametrize("ran, ended", [(8, "time cap"), (12, "Stop"), (30, "done"), (3, "diverged")])
def test_when_it_ends_the_steps_it_ran_of_how_many_and_why(ran, ended):
    h = {"steps_run": ran, "seconds": 61.2, "best_step": ran, "metric": "fidelity", "dev_before": 0.7,
         "dev_after": 0.8, "stopped": ended == "Stop", "ended": ended}
    line = heal_line(h, 30)
    assert (f"Healed {ran} of 30 steps" if ran < 30 else "Healed 30 steps") in line and ENDED[ended] in line
    assert [w for w in ENDED.values() if w in line] == [ENDED[ended]]


def test_an_older_card_without_ended_still_says_the_time_cap():
    h = {"steps_run": 8, "seconds": 300, "best_step": 8, "metric": "fidelity", "dev_before": 0.7, "dev_after": 0.8}
    assert "Healed 8 of 30 steps" in heal_line(h, 30) and "stopped by the time cap" in heal_line(h, 30)


def test_a_steps_pace_leaves_out_the_preparation_before_the_steps():
    """60 s of preparation (the unhealed dev score, a text's labeling) then 2 steps in 20 s: 10 s a step, so 24 of 60
    steps fit a 5-minute cap (a newcomer read "about 8 of 60" at step 2 and pressed Stop)."""
    from compress.techniques.healdev import tick
    p = tick(2, 60, 0.5, [{"step": 0, "loss": None, "dev": 0.6, "seconds": 60.0}], 80.0, 300.0)
    assert p["per_step"] == pytest.approx(10.0) and p["cap_left"] == pytest.approx(220.0)
    assert p["seconds_left"] == pytest.approx(220.0)  # the cap comes first (58 steps would take 580 s)
    assert "at this pace about 24 of 60 steps will run before the cap" in heal_status(p, 60, 5.0)[1]
