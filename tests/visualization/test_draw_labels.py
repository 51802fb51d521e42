"""Detection labels stay inside the picture and off each other (``draw.place_labels``), as ``render`` draws them."""

import itertools

import numpy as np

from harmonicdet.visualization import draw


def _rects(corners, sizes):
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes)]


def _inside(rect, width, height):
    return rect[0] >= 0 and rect[1] >= 0 and rect[2] <= width and rect[3] <= height


def test_a_free_label_sits_above_its_box_at_its_left_end():
    assert draw.place_labels([[20, 30, 50, 60]], [(24, 10)], 100, 100) == [(20, 20)]
    # at the top: inside the box, below its edge
    assert draw.place_labels([[20, 2, 50, 60]], [(24, 10)], 100, 100, inset=2) == [(20, 4)]


def test_a_label_at_the_right_edge_is_moved_inside():
    (x, y), = draw.place_labels([[80, 30, 99, 60]], [(40, 10)], 100, 100)
    assert (x, y) == (60, 20) and x + 40 <= 100


def _total_overlap(rects):
    return sum(draw._overlap(a, b) for a, b in itertools.combinations(rects, 2))


def test_dense_boxes_get_labels_that_do_not_overlap():
    """Touching boxes in a row near the right edge, each label wider than its box: with four, no two labels (nor the
    reserved corner) overlap; with six, where eight places cannot hold them all, they overlap far less than labels
    all above their boxes would; none leaves the picture."""
    taken = [(0, 0, 30, 10)]
    for count in (4, 6):
        boxes = [[40 + 10 * i, 40, 49 + 10 * i, 70] for i in range(count)]
        sizes = [(28, 9)] * count
        corners = draw.place_labels(boxes, sizes, 100, 100, inset=2, taken=taken)
        rects = _rects(corners, sizes)
        assert all(_inside(r, 100, 100) for r in rects)
        assert corners[0] == (40, 31)  # the first (most important) keeps the first place
        above = _rects([(min(b[0], 100 - 28), 31) for b in boxes], sizes)
        if count == 4:
            assert _total_overlap(rects + taken) == 0
        else:
            assert 0 < 4 * _total_overlap(rects) < _total_overlap(above)


def test_when_every_place_is_taken_the_least_overlapping_one_is_used():
    boxes = [[10, 10, 20, 20]] * 9  # nine labels for one box: eight places
    sizes = [(12, 6)] * 9
    corners = draw.place_labels(boxes, sizes, 40, 40)
    assert len(set(corners[:8])) == 8 and all(_inside(r, 40, 40) for r in _rects(corners, sizes))


def test_render_draws_the_labels_where_they_are_placed():
    image = np.full((64, 64, 3), 90, np.uint8)
    boxes = [[40, 20, 63, 40], [44, 22, 63, 42]]
    out = np.asarray(draw.render(image, det_boxes=boxes, det_scores=[0.9, 0.8], det_names=["sandal", "sneaker"],
                                 det_colours=[draw.GOOD, draw.FAIR]))
    assert out.shape == (64, 64, 3)
    f = draw.font(draw.font_size(1))
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = []
    for text in ("sandal 0.90", "sneaker 0.80"):
        left, top, right, bottom = probe.textbbox((0, 0), text, font=f)
        sizes.append((right - left + 2, bottom - top + 1))
    corners = draw.place_labels(boxes[::-1], sizes[::-1], 64, 64, inset=2)[::-1]  # the last drawn first
    for (x, y), (w, h), colour in zip(corners, sizes, (draw.GOOD, draw.FAIR)):
        assert x + w <= 64
        assert tuple(out[y, x]) == colour and tuple(out[y + h - 1, x]) == colour  # the patch's left edge
    assert draw._overlap(*_rects(corners, sizes)) == 0


def test_render_writes_a_note_in_the_corner():
    image = np.full((64, 64, 3), 90, np.uint8)
    out = np.asarray(draw.render(image, det_boxes=np.zeros((0, 4)), det_scores=[], det_names=[], det_colours=[],
                                 note="no detections"))
    assert tuple(out[0, 0]) == draw.BACKGROUND and (out[:12, :40].min(-1) > 150).any()  # light text on the strip
    assert tuple(out[40, 40]) == (90, 90, 90)
