"""Predict sources (`yolojax.data.media`): files, folders, globs, lists, videos, in-memory images, bad files."""
import cv2
import numpy as np
import pytest

from yolojax.data.labels import DataWarning
from yolojax.data.media import list_media, media_hw, read_frames


def write_image(path, hw, value=100):
    cv2.imwrite(str(path), np.full((*hw, 3), value, np.uint8))
    return str(path)


def write_video(path, frames, hw=(48, 64), fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (hw[1], hw[0]))
    for i in range(frames):
        writer.write(np.full((*hw, 3), 20 * i, np.uint8))
    writer.release()
    return str(path)


@pytest.fixture
def folder(tmp_path):
    write_image(tmp_path / "b.jpg", (30, 40))
    write_image(tmp_path / "a.png", (50, 20))
    write_video(tmp_path / "clip.avi", 4)
    (tmp_path / "notes.md").write_text("not media")
    return tmp_path


def test_folder_lists_images_sorted_then_videos(folder):
    assert [f.rsplit("/", 1)[-1] for f in list_media(folder)] == ["a.png", "b.jpg", "clip.avi"]


def test_glob_pattern_keeps_only_matches(folder):
    assert [f.rsplit("/", 1)[-1] for f in list_media(f"{folder}/*.jpg")] == ["b.jpg"]


def test_list_file_entries_are_relative_to_the_list(folder):
    (folder / "list.txt").write_text("b.jpg\n\nclip.avi\n")
    assert [f.rsplit("/", 1)[-1] for f in list_media(folder / "list.txt")] == ["b.jpg", "clip.avi"]


def test_missing_entry_and_empty_source_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jpg does not exist"):
        list_media(tmp_path / "nowhere.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos"):
        list_media(tmp_path / "empty")


def test_sizes_from_headers_match_decoded_frames(folder):
    media = list_media(folder)
    assert media_hw(media) == [(50, 20), (30, 40), (48, 64)]
    assert [f.image.shape[:2] for f in read_frames(media)][:3] == [(50, 20), (30, 40), (48, 64)]


def test_video_frames_are_numbered_from_one_with_stride(folder):
    video = list_media(folder / "clip.avi")
    frames = list(read_frames(video))
    assert [f.frame for f in frames] == [1, 2, 3, 4] and frames[0].fps == pytest.approx(10)
    np.testing.assert_allclose([f.image.mean() for f in frames], [0, 20, 40, 60], atol=3)  # in order
    strided = list(read_frames(video, vid_stride=2))
    np.testing.assert_allclose([f.image.mean() for f in strided], [20, 60], atol=3)  # 2nd and 4th frames


def test_unreadable_files_warn_with_name_and_reason_and_the_rest_go_on(folder):
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "broken.mp4").write_bytes(b"not a video")
    with pytest.warns(DataWarning) as caught:
        frames = list(read_frames(list_media(folder)))
    messages = " | ".join(str(w.message) for w in caught)
    assert "broken.jpg: not a readable image" in messages and "broken.mp4: not a readable video" in messages
    assert len(frames) == 2 + 4


def test_in_memory_images_are_named_like_the_reference():
    images = [np.zeros((8, 9, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]
    assert [(f.path, f.image.shape) for f in read_frames(list_media(images))] == [
        ("image0.jpg", (8, 9, 3)), ("image1.jpg", (4, 5, 3))]
    with pytest.raises(ValueError, match="uint8"):
        list_media(np.zeros((8, 9, 3), np.float32))
