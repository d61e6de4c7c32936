"""`avatar` CLI: bad input ends with one line naming the problem and exit status 2."""

import pytest

from services.commands.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["talk", "--text", "   ", "--out", "x.mp4"], "--text is empty"),
        (["talk", "--text", "hi"], "give --out"),
        (["talk", "--text", "hi", "--out", "x.avi"], "must end in .mp4"),
        (["talk", "--text", "hi", "--out", "x.mp4", "--llm", "gpt5"], "unknown llm backend"),
        (["talk", "--audio", "/nonexistent.wav", "--out", "x.mp4"], "/nonexistent.wav"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_non_audio_file_is_rejected(tmp_path, capsys):
    text_file = tmp_path / "notes.wav"
    text_file.write_text("this is not audio")
    assert main(["talk", "--audio", str(text_file), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "notes.wav" in capsys.readouterr().err


def test_backends_lists_every_stage(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for stage in ("asr", "llm", "tts", "render"):
        assert f"{stage}:" in out
