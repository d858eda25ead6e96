"""Label tables and task declarations: what trains, and one-line errors for what cannot."""

import math

import numpy as np
import pytest

from nic_ray.train.labels import LabelError, load_labels, parse_task

STORE = ["s1", "s2", "s3", "s4"]


def table(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return str(path)


def test_tasks_and_alignment(tmp_path):
    path = table(
        tmp_path, "slide_id,grade,her2,time,event\ns1,G2,pos,10,1\ns2,G1,neg,5,0\ns3,G3,,7,1\nextra,G1,neg,1,1\n"
    )
    tasks = [parse_task("grade:multiclass:grade"), parse_task("her2:binary:her2"), parse_task("os:survival:time,event")]
    labels = load_labels(path, tasks, STORE)
    assert labels.slide_ids == ["s1", "s2", "s3"]
    assert labels.not_in_store == ["extra"] and labels.not_in_table == ["s4"]
    grade, her2 = labels.tasks[0], labels.tasks[1]
    assert grade.classes == ("G1", "G2", "G3") and grade.outputs == 3 and her2.outputs == 1
    assert labels.values["grade"] == [1, 0, 2]
    assert labels.values["her2"][:2] == [1, 0] and math.isnan(labels.values["her2"][2])  # masked
    assert labels.values["os"] == [(10.0, 1.0), (5.0, 0.0), (7.0, 1.0)]


@pytest.mark.parametrize(
    "text,task,message",
    [
        ("slide_id,y\ns1,abc\ns2,1\n", "y:regression:y", "y of s1 is 'abc', not a number"),
        ("slide_id,t,e\ns1,-3,1\ns2,4,0\n", "os:survival:t,e", "negative time -3 for s1"),
        ("slide_id,t,e\ns1,3,0\ns2,4,0\n", "os:survival:t,e", "no events"),
        ("slide_id,t,e\ns1,3,2\ns2,4,0\n", "os:survival:t,e", "event of s1 is 2, not 0 or 1"),
        ("slide_id,c\ns1,a\ns2,a\n", "c:binary:c", "a single class 'a'"),
        ("slide_id,c\ns1,a\ns2,b\ns3,c\n", "c:binary:c", "binary needs 2 classes, found 3"),
        ("slide_id,c\nnope,a\nnada,b\n", "c:binary:c", "none of its 2 slide ids is complete"),
        ("slide_id,c\ns1,a\ns1,b\n", "c:binary:c", "slide ids appear twice: s1"),
        ("slide_id,c\ns1,a\ns2,b\n", "c:binary:missing", "no column missing"),
    ],
)
def test_bad_tables(tmp_path, text, task, message):
    path = table(tmp_path, text)
    with pytest.raises(LabelError, match=message) as info:
        load_labels(path, [parse_task(task)], STORE)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["grade", "grade:ordinal:g", "os:survival:time", "y:regression:a,b", "::"])
def test_bad_task_declarations(text):
    with pytest.raises(LabelError, match="task"):
        parse_task(text)


def test_unreadable_table(tmp_path):
    with pytest.raises(LabelError, match="cannot read the label table"):
        load_labels(str(tmp_path / "nope.csv"), [parse_task("c:binary:c")], STORE)


def test_a_patients_slides_share_one_role(tmp_path):
    """Seeded folds keep each patient's slides together; split or fold columns that part a
    patient are refused in one line. A slide without a patient id is a patient of its own."""
    from nic_ray.train.splits import plan_splits

    rng = np.random.default_rng(0)
    rows, ids = ["slide_id,patient_id,y"], []
    for p in range(30):
        for k in range(1 + p % 3):  # 1 to 3 slides a patient
            ids.append(f"p{p}-{k}")
            rows.append(f"p{p}-{k},{'' if p == 0 else f'P{p}'},{rng.integers(2)}")
    path = table(tmp_path, "\n".join(rows) + "\n")
    labels = load_labels(path, [parse_task("y:binary:y")], ids)
    patient = dict(zip(labels.slide_ids, labels.patients))
    for seed in range(3):
        parts = plan_splits(labels, folds=4, seed=seed)
        tested = [s for part in parts.values() for s in part["test"]]
        assert sorted(tested) == sorted(ids)  # every slide tested once
        for part in parts.values():
            roles = [{patient[s] for s in part[role]} for role in ("train", "val", "test")]
            assert not (roles[0] & roles[1] or roles[0] & roles[2] or roles[1] & roles[2]), part
    split = table(tmp_path, "slide_id,patient_id,y,split\na,P1,0,train\nb,P1,1,test\nc,P2,1,val\nd,P3,0,train\n")
    with pytest.raises(LabelError, match="patient P1 is in split train .slide a. and test .slide b.; a patient's"):
        load_labels(split, [parse_task("y:binary:y")], list("abcd"))
    fold = table(tmp_path, "slide_id,patient_id,y,fold\na,P1,0,0\nb,P1,1,0\nc,P2,1,1\nd,P2,0,2\n")
    with pytest.raises(LabelError, match="patient P2 is in fold 1 .slide c. and 2 .slide d."):
        load_labels(fold, [parse_task("y:binary:y")], list("abcd"))
