"""The resize rules of ``datamodules.images``, with sizes worked out by hand."""

from PIL import Image

from datamodules.images import fit_image, load_image, resize_like_llamafactory

MAX, MIN = 589824, 1024  # LLaMA-Factory's image_max_pixels / image_min_pixels defaults (768 * 768, 32 * 32)


def test_llamafactory_scales_into_the_bounds_truncating_each_side():
    def size(w: int, h: int, mode: str = "RGB") -> tuple[int, int]:
        return resize_like_llamafactory(Image.new(mode, (w, h)), MIN, MAX).size

    assert size(1280, 720) == (1024, 576)  # factor sqrt(589824 / 921600) = 0.8 exactly
    assert size(812, 728) == (811, 727)  # factor 0.99889: 811.10 -> 811, 727.19 -> 727 (the processor: 812x728)
    assert size(640, 480) == (640, 480)  # within the bounds: untouched (the processor rounds it to 644x476)
    assert size(20, 30) == (28, 39)  # factor sqrt(1024 / 600) = 1.3064: 26x39, then the short side widened to 28
    assert size(6000, 28) == (5040, 28)  # aspect ratio 214 > 200: squeezed to 180
    assert size(100, 80, "L") == (100, 80)


def test_llamafactory_resizes_in_the_files_mode_then_drops_alpha():
    rgba = Image.new("RGBA", (200, 100), (10, 20, 30, 0))  # fully transparent, within the bounds
    assert resize_like_llamafactory(rgba, MIN, MAX).getpixel((0, 0)) == (10, 20, 30)  # alpha dropped, not blended
    big = Image.new("RGBA", (2000, 1000), (10, 20, 30, 0))  # resized first: Pillow premultiplies alpha
    assert resize_like_llamafactory(big, MIN, MAX).getpixel((0, 0)) == (0, 0, 0)
    palette = Image.new("P", (2000, 1000))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 1001, 1000))  # left half colour 1 (blue), right half colour 0 (red)
    out = resize_like_llamafactory(palette, MIN, MAX)
    assert out.mode == "RGB" and set(out.getdata()) == {(0, 0, 255), (255, 0, 0)}  # nearest: no blended colours


def test_load_image_keeps_the_files_mode_on_request(tmp_path):
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "a.png")
    assert load_image("a.png", tmp_path, rgb=False).mode == "RGBA"
    assert load_image("a.png", tmp_path).getpixel((0, 0)) == (255, 255, 255)  # the RL path: transparency on white


def test_fit_image_keeps_the_area_within_max_pixels():
    assert fit_image(Image.new("RGB", (1280, 720)), 3136, MAX).size == (1008, 560)  # 720 tokens, rounded down
    assert fit_image(Image.new("RGB", (812, 728)), 3136, MAX).size == (784, 700)
