"""Image processor: MGM's pad/resize/normalise, the LR view from the HR tensor, and its HD views."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlmkit.data.processor import CLIP_MEAN, CLIP_STD, ImageProcessor
from vlmkit.data.views import split_views

MEAN_RGB = (122, 116, 104)  # CLIP's mean as the RGB ints MGM pads with


def random_image(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def reference_pixels(image, size):
    """MGM's recipe, restated: pad to square with the mean colour, bicubic, /255, CLIP-normalise."""
    image = image.convert("RGB")
    w, h = image.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), MEAN_RGB)
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    square = square.resize((size, size), Image.BICUBIC)
    x = torch.tensor(np.array(square), dtype=torch.float64).permute(2, 0, 1) / 255
    x = (x - torch.tensor(CLIP_MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(
        CLIP_STD, dtype=torch.float64
    )[:, None, None]
    return x.float()


def normalised(colour):
    """CLIP-normalised value of an RGB int colour: (3,)."""
    return ((torch.tensor(colour) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).float()


def assert_constant(region, colour):
    """Every pixel of ``region`` (3, h, w) is ``colour`` after normalisation."""
    expected = normalised(colour)[:, None, None].expand_as(region)
    torch.testing.assert_close(region, expected, rtol=0, atol=1e-5)


def quadrant_image(size, colours):
    """A square image whose four quadrants (row-major) have the given colours."""
    half = size // 2
    array = np.zeros((size, size, 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        r, c = divmod(i, 2)
        array[r * half : (r + 1) * half, c * half : (c + 1) * half] = colour
    return Image.fromarray(array)


# ----------------------------------------------------------------------------- shapes
def test_shapes_mgm_sizes():
    out = ImageProcessor(336, 768)([random_image(500, 300), random_image(200, 260, seed=1)])
    assert out["lr"].shape == (2, 3, 336, 336) and out["hr"].shape == (2, 3, 768, 768)
    assert out["num_views"] == 1 and out["lr"].dtype == out["hr"].dtype == torch.float32


def test_shapes_mgm_hd_sizes():
    processor = ImageProcessor(336, 1536, image_grid=2, image_global=True)
    out = processor(random_image(640, 480))
    assert out["lr"].shape == (5, 3, 336, 336) and out["hr"].shape == (1, 3, 1536, 1536)
    assert out["num_views"] == processor.num_views == 5


def test_shapes_single_encoder():
    out = ImageProcessor(28)(random_image(40, 30))
    assert out["lr"].shape == (1, 3, 28, 28) and out["hr"] is None
    out = ImageProcessor(14, image_grid=2, image_global=True)([random_image(40, 30)] * 3)
    assert out["lr"].shape == (15, 3, 14, 14) and out["hr"] is None and out["num_views"] == 5


@pytest.mark.parametrize(
    "grid, use_global, views", [(1, False, 1), (1, True, 1), (2, False, 4), (3, True, 10)]
)
def test_num_views(grid, use_global, views):
    processor = ImageProcessor(8, image_grid=grid, image_global=use_global)
    assert processor.num_views == views
    assert processor(random_image(30, 20))["lr"].shape[0] == views


# ----------------------------------------------------------------------------- pixel values
def test_hr_and_lr_equal_an_independent_restatement():
    images = [random_image(50, 30), random_image(24, 40, seed=1)]
    out = ImageProcessor(14, 32)(images)
    hr = torch.stack([reference_pixels(image, 32) for image in images])
    torch.testing.assert_close(out["hr"], hr, rtol=0, atol=1e-6)
    lr = F.interpolate(hr, size=(14, 14), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(out["lr"], lr, rtol=0, atol=1e-6)


def test_hd_lr_views_from_the_normalised_hr_tensor():
    image = random_image(60, 45)
    out = ImageProcessor(8, 48, image_grid=2, image_global=True)(image)
    hr = reference_pixels(image, 48)[None]
    lr16 = F.interpolate(hr, size=(16, 16), mode="bilinear", align_corners=False)
    global_view = F.interpolate(lr16, size=(8, 8), mode="bilinear", align_corners=False)
    crops = [lr16[..., r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] for r in range(2) for c in range(2)]
    torch.testing.assert_close(out["lr"], torch.cat([global_view] + crops), rtol=0, atol=1e-6)


def test_pad_uses_the_mean_colour_and_centres_the_image():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    out = ImageProcessor(40, aspect="pad")(image)["lr"][0]
    mean_pixel = (torch.tensor(MEAN_RGB) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[:, 0, 0], mean_pixel.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, -1, -1], mean_pixel.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, 20, 20], red.float(), rtol=0, atol=1e-5)


def test_resize_squashes_and_crop_keeps_the_centre():
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, 20:40] = 255  # white middle third between black thirds
    image = Image.fromarray(array)
    white = ((1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).float()
    cropped = ImageProcessor(20, aspect="crop")(image)["lr"][0]
    torch.testing.assert_close(cropped, white[:, None, None].expand(3, 20, 20), rtol=0, atol=1e-5)
    squashed = ImageProcessor(20, aspect="resize")(image)["lr"][0]
    assert squashed[:, :, 0].max() < 0 < squashed[:, :, 10].min()  # black edges, white middle


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_any_pil_mode_is_converted_to_rgb(mode):
    image = random_image(30, 20, mode=mode)
    out = ImageProcessor(16)(image)["lr"]
    assert out.shape == (1, 3, 16, 16)
    torch.testing.assert_close(out[0], reference_pixels(image, 16), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- HD views
def test_hd_view_order_by_content():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    image = quadrant_image(64, colours)
    out = ImageProcessor(16, 64, image_grid=2, image_global=True)(image)["lr"]
    crops = out[1:]
    for crop, colour in zip(crops, colours):
        centre = crop[:, 4:12, 4:12]  # away from the blurred quadrant border
        assert_constant(centre, colour)
    # the global view shows the whole image: each of its quadrants has its own colour
    whole = out[0]
    for i, colour in enumerate(colours):
        r, c = divmod(i, 2)
        corner = whole[:, r * 8 + 2 : r * 8 + 6, c * 8 + 2 : c * 8 + 6]
        assert_constant(corner, colour)


# ----------------------------------------------------------------------------- tensors and errors
def test_tensor_input_passes_through():
    processor = ImageProcessor(8, 32, image_grid=2, image_global=True)
    pixels = torch.randn(2, 3, 32, 32)
    out = processor(pixels)
    assert out["hr"] is pixels and out["lr"].shape == (10, 3, 8, 8)
    lr16 = F.interpolate(pixels, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["lr"], split_views(lr16, 2, True))
    assert processor(pixels[0])["hr"].shape == (1, 3, 32, 32)
    mixed = processor([random_image(40, 40), pixels[0]])
    assert mixed["hr"].shape == (2, 3, 32, 32) and torch.equal(mixed["hr"][1], pixels[0])


def test_tensor_input_single_encoder_expects_lr_times_grid():
    processor = ImageProcessor(8, image_grid=2)
    assert processor(torch.randn(1, 3, 16, 16))["lr"].shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\).*\(1, 3, 8, 8\)"):
        processor(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("shape", [(2, 3, 30, 30), (2, 1, 32, 32), (2, 3, 32, 16), (5, 32, 32)])
def test_wrong_tensor_shape_names_both_shapes(shape):
    with pytest.raises(ValueError) as err:
        ImageProcessor(8, 32)(torch.randn(*shape))
    assert "(B, 3, 32, 32)" in str(err.value) and str(tuple(shape)) in str(err.value)


def test_integer_tensor_is_rejected():
    with pytest.raises(TypeError, match="float"):
        ImageProcessor(8, 32)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    "bad, name", [("cat.png", "str"), (np.zeros((8, 8, 3)), "ndarray"), ([1], "int")]
)
def test_non_images_raise_type_error_naming_the_type(bad, name):
    with pytest.raises(TypeError, match=name):
        ImageProcessor(8)(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="aspect"):
        ImageProcessor(8, aspect="stretch")
    with pytest.raises(ValueError, match="image_grid"):
        ImageProcessor(8, image_grid=0)
    with pytest.raises(ValueError, match="no images"):
        ImageProcessor(8)([])
