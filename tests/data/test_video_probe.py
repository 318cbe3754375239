"""probe: the six real samples agree with shared/data/videos/README.md; bad files fail with
their reason; the `tspipe probe` command."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tspipe.data.video import available_backends, open_reader, probe
from tspipe.data.video.probe import MIN_DECODED_FRACTION, expected_frames
from tspipe.doors.cli_probe import probe_command
from tspipe.errors import VideoError

FIELDS = {"path", "container", "codec", "width", "height", "fps", "constant_fps",
          "frames_header", "frames_decoded", "duration", "has_audio", "warnings"}

# The README's table: container, codec, W, H, average fps, CFR, header count, decoded,
# duration (s), audio, and the start of each warning expected from the PyAV probe.
README = {
    "bikes.mp4": ("mp4", "h264", 640, 272, 25.0, True, 250, 250, 10.0, False, []),
    "box.mp4": ("mp4", "h264", 640, 480, 29.967, False, 456, 455, 15.184, True,
                ["frame count: the header says 456, 455", "timestamps not monotonic"]),
    "vtest.avi": ("avi", "msmpeg4v3", 768, 576, 10.0, True, 795, 795, 79.5, False, []),
    "tree.avi": ("avi", "cinepak", 320, 240, 2.3, False, 444, 68, 29.6, False,
                 ["frame count: the header says 444, 68", "frame rate: the header says 15.000",
                  "variable frame rate"]),
    "cityCC0.mpg": ("mpeg", "mpeg2video", 720, 405, 25.0, True, None, 190, 7.6, False, []),
    "cup_vp9.webm": ("webm", "vp9", 640, 480, 26.777, True, None, 217, 8.11, True, []),
}


@pytest.fixture(scope="module")
def samples(shared_data: Path) -> Path:
    path = shared_data / "videos"
    missing = [name for name in README if not (path / name).is_file()]
    if missing:
        pytest.fail(f"real sample videos {missing} missing at {path}; set TSPIPE_SHARED_DATA")
    return path


@pytest.mark.parametrize("name", list(README))
def test_probe_agrees_with_readme(samples, name):
    (container, codec, width, height, fps, cfr, header, decoded, duration, audio,
     warnings) = README[name]
    info = probe(samples / name)
    assert (info.container, info.codec, info.width, info.height) == (container, codec, width,
                                                                     height)
    assert info.frames_header == header
    assert info.frames_decoded == decoded
    assert info.fps == pytest.approx(fps, rel=0.005)
    assert info.constant_fps is cfr
    assert info.duration == pytest.approx(duration, abs=1 / info.fps)  # within one frame
    assert info.has_audio is audio
    assert len(info.warnings) == len(warnings), info.warnings
    for got, start in zip(info.warnings, warnings, strict=True):
        assert got.startswith(start), (got, start)
    assert set(info.to_dict()) == FIELDS
    json.dumps(info.to_dict())  # JSON-able as is


@pytest.mark.slow
def test_cross_check_names_each_disagreeing_decoder(samples):
    usable = {n for n, why in available_backends().items() if why is None}
    box = probe(samples / "box.mp4", cross_check=True)
    disagree = [w for w in box.warnings if w.startswith("decoders disagree")]
    if "decord" in usable:
        assert "decoders disagree: decord decodes 456 frames, pyav 455" in disagree
    assert all("torchcodec" not in w for w in disagree)  # torchcodec also decodes 455
    city = probe(samples / "cityCC0.mpg", cross_check=True)
    disagree = [w for w in city.warnings if w.startswith("decoders disagree")]
    if "torchcodec" in usable:  # MPEG-PS: indexed reads fail near the end
        assert len(disagree) == 1 and disagree[0].startswith("decoders disagree: torchcodec "
                                                             "fails (torchcodec failed at frame")
    else:
        assert disagree == []
    bikes = probe(samples / "bikes.mp4", cross_check=True)
    assert bikes.warnings == ()


def test_probe_with_another_backend(samples):
    if available_backends()["decord"] is not None:
        pytest.skip("decord is not installed on this platform")
    info = probe(samples / "box.mp4", backend="decord")
    assert info.frames_decoded == 456  # decord's own count (it repeats the last frame)
    assert not any(w.startswith("frame count") for w in info.warnings)  # = the header's
    assert info.width == 640 and info.has_audio  # header facts come from PyAV


# -- bad files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(samples, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    files = {"empty": root / "empty.mp4", "text": root / "readme.mp4",
             "cut_moov": root / "cut_bikes.mp4", "cut_index": root / "cut_box.mp4",
             "audio_only": root / "tone.m4a", "undecodable": root / "garbage.mp4"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("This is a text file, not a video.\n" * 20)
    for key, name in (("cut_moov", "bikes.mp4"), ("cut_index", "box.mp4")):
        data = (samples / name).read_bytes()
        files[key].write_bytes(data[:len(data) // 2])
    _write_audio_only(files["audio_only"])
    _write_garbage_video(files["undecodable"])
    return files


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        tone = np.sin(np.arange(44100) * 2 * np.pi * 440 / 44100).astype(np.float32)
        for i in range(0, 44100 - 1024, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 44100, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _write_garbage_video(path: Path) -> None:
    """An MP4 with an H.264 stream whose packets are random bytes: nothing decodes."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 25)
        stream.codec_context.open()
        for i in range(10):
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.time_base = stream, Fraction(1, 25)
            packet.pts = packet.dts = i
            packet.is_keyframe = True
            container.mux(packet)


@pytest.mark.parametrize(("kind", "reason"), [
    ("empty", "empty file (0 bytes)"),
    ("text", "not a video file: FFmpeg recognises no media format"),
    ("cut_moov", "truncated or incomplete MP4: it has no 'moov' atom"),
    ("cut_index", "truncated: the container's index refers to 1,901,774 bytes but the file "
                  "has 950,887"),
    ("audio_only", "no video stream: the file holds only audio (aac)"),
    ("undecodable", "no decodable frames: the decoder rejected all"),
])
def test_bad_files_say_why(bad_files, kind, reason):
    path = bad_files[kind]
    with pytest.raises(VideoError) as caught:
        probe(path, video_id="v1")
    assert caught.value.path == str(path) and caught.value.video_id == "v1"
    assert reason in str(caught.value)


# What each real sample's header leads one to expect, and from where: the decoded-frame
# fraction rule (MIN_DECODED_FRACTION) must keep all six. tree.avi counts 444 frames in its
# header, but 376 of them are empty "drop frame" chunks: its 68 indexed pictures are what
# it holds.
EXPECTED = {"bikes.mp4": (250, "the header's frame count"),
            "box.mp4": (456, "the header's frame count"),
            "vtest.avi": (795, "the AVI index's non-empty entries"),
            "tree.avi": (68, "the AVI index's non-empty entries"),
            "cityCC0.mpg": (190, "the header's 7.600 s at 25.000 fps"),
            "cup_vp9.webm": (217, "the header's 8.114 s at 26.777 fps")}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_expected_frames_of_the_real_samples(samples, name):
    with open_reader(samples / name) as reader:
        count, source = expected_frames(reader.header)
    assert (count, source) == EXPECTED[name]
    assert probe(samples / name).frames_decoded >= MIN_DECODED_FRACTION * count


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="cannot read the file"):
        probe(tmp_path / "nowhere.mp4")


# -- tspipe probe -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("probe")(probe_command)
    app.command("other")(lambda: None)  # two commands: `probe` is then a sub-command
    return app


def test_probe_command_json(cli, samples, bad_files):
    result = CliRunner().invoke(cli, ["probe", str(samples / "tree.avi"),
                                      str(bad_files["text"]), str(samples / "bikes.mp4"),
                                      "--json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in rows] == ["tree.avi", "readme.mp4", "bikes.mp4"]
    assert set(rows[0]) == FIELDS and rows[0]["frames_decoded"] == 68
    assert set(rows[1]) == {"path", "error"} and rows[1]["error"].startswith("not a video")
    assert rows[2]["frames_decoded"] == 250 and rows[2]["warnings"] == []


def test_probe_command_table(cli, samples):
    result = CliRunner().invoke(cli, ["probe", str(samples / "tree.avi"),
                                      str(samples / "bikes.mp4")])
    assert result.exit_code == 0, result.output
    assert "tree.avi" in result.stdout and "bikes.mp4" in result.stdout
    assert "68 (444)" in result.stdout and "250 (250)" in result.stdout
    assert "tree.avi: frame count: the header says 444, 68 frames decode" in result.stdout


def test_probe_command_unknown_backend(cli, samples):
    result = CliRunner().invoke(cli, ["probe", str(samples / "bikes.mp4"), "--backend",
                                      "vlc"])
    assert result.exit_code != 0
    assert "unknown video backend 'vlc'" in str(result.exception)


def test_every_backend_is_installed_in_ci():
    """CI installs torchcodec and its FFmpeg libraries: no backend branch goes untested."""
    import os

    from tspipe.data.video import available_backends

    missing = {k: v for k, v in available_backends().items() if v is not None}
    if os.environ.get("CI"):
        assert missing == {}
    else:
        assert set(missing) <= {"torchcodec", "decord"}, missing
