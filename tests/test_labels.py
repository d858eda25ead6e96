"""Label tables and task declarations: what trains, and one-line errors for what cannot."""

import math

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
