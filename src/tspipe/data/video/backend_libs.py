"""decord and torchcodec: the other backends, imported only when used (see
:mod:`.backends` for why neither is the default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.data.video.header import open_container, read_header
from tspipe.data.video.reader import Size, SourceFrame, import_problem, library_size
from tspipe.errors import VideoError

_TC_CHUNK = 32  # torchcodec frames per call


class _LibraryReader:
    """What both share: the header comes from PyAV (which also names a bad file's fault);
    the library hands out RGB arrays already at the asked size."""

    decode_errors = 0  # these libraries do not report skipped packets

    def __init__(self, path: Path, *, video_id: str | None = None) -> None:
        self.path, self.video_id = path, video_id
        with open_container(path, video_id=video_id) as container:
            self.header = read_header(container, path)

    def to_rgb(self, image: np.ndarray, size: Size | None) -> np.ndarray:
        return image

    def close(self) -> None:
        pass


class DecordReader(_LibraryReader):
    """decord 0.6 (FFmpeg 4.1): resizes while decoding; every frame is converted. Its
    timestamps come from its own sorted packet index. It repeats box.mp4's last frame."""

    backend = "decord"

    def frames(self, size: Size | None) -> Iterator[SourceFrame]:
        import decord

        vr = self._open(size)
        n = len(vr)
        times = vr.get_frame_timestamp(range(n)) if n else np.zeros((0, 2))
        for i in range(n):
            try:
                image = vr.next().asnumpy()
            except StopIteration:
                break
            except decord.DECORDError as exc:
                raise VideoError(self.path, f"decord failed at frame {i} of {n}: "
                                 f"{str(exc).splitlines()[0]}", video_id=self.video_id) from None
            start, end = float(times[i, 0]), float(times[i, 1])
            yield SourceFrame(start, end - start if end > start else None, image)

    def read(self, indices: Sequence[int], size: Size | None) -> dict[int, np.ndarray]:
        import decord

        vr = self._open(size)
        ok = [i for i in indices if i < len(vr)]
        try:
            batch = vr.get_batch(ok).asnumpy() if ok else []
        except decord.DECORDError as exc:
            raise VideoError(self.path, f"decord cannot read frames {ok[0]}..{ok[-1]}: "
                             f"{str(exc).splitlines()[0]}", video_id=self.video_id) from None
        return dict(zip(ok, batch, strict=True))

    def _open(self, size: Size | None) -> Any:
        import decord

        height, width = library_size(self.header, size) or (-1, -1)
        try:
            return decord.VideoReader(str(self.path), ctx=decord.cpu(0), width=width,
                                      height=height, num_threads=0)
        except decord.DECORDError as exc:
            raise VideoError(self.path, f"decord cannot open it: {exc}",
                             video_id=self.video_id) from None


class DecordBackend:
    name = "decord"

    def unavailable_reason(self) -> str | None:
        return import_problem("decord")

    def open(self, path: Path, *, video_id: str | None = None) -> DecordReader:
        return DecordReader(path, video_id=video_id)


class TorchCodecReader(_LibraryReader):
    """torchcodec 0.13 (CPU build; Debian's FFmpeg 5.1 shared libraries), exact seek mode,
    resize in its FFmpeg filter graph. Indexed reads of cityCC0.mpg (MPEG-PS) fail from
    frame 178 (frame 186 when read in chunks, as here)."""

    backend = "torchcodec"

    def frames(self, size: Size | None) -> Iterator[SourceFrame]:
        decoder = self._open(size)
        n = decoder.metadata.num_frames or 0
        for start in range(0, n, _TC_CHUNK):
            stop = min(n, start + _TC_CHUNK)
            try:
                batch = decoder.get_frames_in_range(start, stop)
            except RuntimeError:  # find the exact frame that fails, for the message
                for i in range(start, stop):
                    frame = self._frame(decoder, i, n)
                    yield SourceFrame(frame.pts_seconds, frame.duration_seconds,
                                      frame.data.numpy())
                continue
            data = batch.data.numpy()
            durations = batch.duration_seconds.tolist()
            for j, pts in enumerate(batch.pts_seconds.tolist()):
                yield SourceFrame(pts, durations[j] or None, data[j])

    def read(self, indices: Sequence[int], size: Size | None) -> dict[int, np.ndarray]:
        decoder = self._open(size)
        ok = [i for i in indices if i < (decoder.metadata.num_frames or 0)]
        try:
            data = decoder.get_frames_at(ok).data.numpy() if ok else []
        except RuntimeError as exc:
            raise VideoError(self.path, f"torchcodec cannot read frames {ok[0]}..{ok[-1]}: "
                             f"{exc}", video_id=self.video_id) from None
        return dict(zip(ok, data, strict=True))

    def _frame(self, decoder: Any, i: int, n: int) -> Any:
        try:
            return decoder.get_frame_at(i)
        except RuntimeError as exc:
            raise VideoError(self.path, f"torchcodec failed at frame {i} of {n}: {exc}",
                             video_id=self.video_id) from None

    def _open(self, size: Size | None) -> Any:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        size = library_size(self.header, size)
        try:
            return VideoDecoder(str(self.path), dimension_order="NHWC", num_ffmpeg_threads=0,
                                seek_mode="exact",
                                transforms=[Resize(size)] if size is not None else None)
        except (RuntimeError, ValueError) as exc:
            raise VideoError(self.path, f"torchcodec cannot open it: {exc}",
                             video_id=self.video_id) from None


class TorchCodecBackend:
    name = "torchcodec"

    def unavailable_reason(self) -> str | None:
        # torchcodec >= 0.14 wheels are CUDA builds that fail to import on CPU torch, and
        # 0.13 needs FFmpeg 4-7 shared libraries (Debian: apt-get install ffmpeg).
        return import_problem("torchcodec.decoders")

    def open(self, path: Path, *, video_id: str | None = None) -> TorchCodecReader:
        return TorchCodecReader(path, video_id=video_id)
