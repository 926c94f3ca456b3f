"""The Core ML interpreter's ops against PyTorch on a real photo's pixels (edge cases the converters emit:
groups, strides, dilation, padding, channel/space rearrangements). coremltools' own op tests are run by
benchmarks/coreml_conformance.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mvkit.coreml.ops import OPS
from mvkit.coreml.ops.image import op_crop_resize_ios17


@pytest.fixture(scope="module")
def pixels(photos) -> torch.Tensor:
    """chelsea.png as a [2, 8, 12, 12] tensor: RGB + grey + their squares, two crops."""
    image = np.asarray(Image.open(photos["chelsea"]).convert("RGB").resize((24, 12)), np.float32) / 255
    rgb = torch.from_numpy(image).permute(2, 0, 1)
    planes = torch.cat([rgb, rgb.mean(0, keepdim=True), rgb ** 2, rgb.mean(0, keepdim=True) ** 2])
    return torch.stack([planes[:, :, :12], planes[:, :, 12:]])


def test_grouped_strided_dilated_conv(pixels):
    weight = torch.linspace(-1, 1, 6 * 4 * 3 * 3).reshape(6, 4, 3, 3)
    got = OPS["conv"](x=pixels.numpy(), weight=weight.numpy(), bias=np.arange(6, dtype=np.float32),
                      strides=[2, 1], pad_type="custom", pad=[1, 2, 0, 1], dilations=[1, 2], groups=2)
    expected = F.conv2d(F.pad(pixels, (0, 1, 1, 2)), weight, torch.arange(6.0), stride=(2, 1), dilation=(1, 2), groups=2)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("stride,dilation,groups,crop", [(2, 1, 1, (0, 0)), (2, 2, 2, (1, 1)), (3, 1, 4, (1, 0))])
def test_conv_transpose_matches_pytorch(pixels, stride, dilation, groups, crop):
    weight = torch.linspace(-1, 1, 8 * 3 * 3 * 3).reshape(8, 3, 3, 3)  # [C_in, C_out / groups, kh, kw]
    full = F.conv_transpose2d(pixels, weight, torch.arange(3.0 * groups), stride=stride, dilation=dilation, groups=groups)
    expected = full[:, :, crop[0]:full.shape[2] - crop[1], crop[0]:full.shape[3] - crop[1]]
    got = OPS["conv_transpose"](x=pixels.numpy(), weight=weight.numpy(), bias=np.arange(3.0 * groups, dtype=np.float32),
                                pad_type="custom", pad=[crop[0], crop[1], crop[0], crop[1]], strides=[stride] * 2,
                                dilations=[dilation] * 2, groups=groups)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_pixel_shuffle_and_depth_to_space_orders(pixels):
    x = pixels.numpy()
    np.testing.assert_array_equal(OPS["pixel_shuffle"](x=x, upscale_factor=2), F.pixel_shuffle(pixels, 2).numpy())
    # depth_to_space is TensorFlow's DCR order: not PyTorch's, but space_to_depth undoes it exactly
    shuffled = OPS["depth_to_space"](x=x, block_size=2)
    assert shuffled.shape == (2, 2, 24, 24) and not np.array_equal(shuffled, F.pixel_shuffle(pixels, 2).numpy())
    np.testing.assert_array_equal(OPS["space_to_depth"](x=shuffled, block_size=2), x)
    # DCR: output pixel (i=0, j=1) of channel c=0 reads input channel (i * 2 + j) * C' + c = 2 (C' = 2)
    assert shuffled[0, 0, 0, 1] == x[0, 2, 0, 0]


def test_space_to_batch_round_trip(pixels):
    x = pixels.numpy()
    batched = OPS["space_to_batch"](x=x, block_shape=[2, 3], paddings=[[1, 1], [0, 3]])
    assert batched.shape == (12, 8, 7, 5)
    np.testing.assert_array_equal(OPS["batch_to_space"](x=batched, block_shape=[2, 3], crops=[[1, 1], [0, 3]]), x)


def test_local_response_norm_matches_pytorch(pixels):
    got = OPS["local_response_norm"](x=pixels.numpy(), size=5, alpha=1e-2, beta=0.75, k=1.0)
    np.testing.assert_allclose(got, F.local_response_norm(pixels, 5, alpha=1e-2, beta=0.75, k=1.0).numpy(), atol=1e-6)


def test_sliding_windows_match_unfold(pixels):
    got = OPS["sliding_windows"](x=pixels.numpy(), axis=2, size=4, stride=3)
    np.testing.assert_array_equal(got, pixels.unfold(2, 4, 3).movedim(-1, 3).numpy())


def test_pixel_unshuffle_matches_pytorch(pixels):
    np.testing.assert_array_equal(OPS["pixel_unshuffle"](x=pixels.numpy(), downscale_factor=2),
                                  F.pixel_unshuffle(pixels, 2).numpy())


@pytest.mark.parametrize("sampling,padding", [("bilinear", "zeros"), ("bilinear", "border"),
                                              ("bilinear", "reflection"), ("nearest", "zeros")])
def test_resample_and_affine_match_grid_sample(pixels, sampling, padding):
    # an affine warp that rotates, zooms out and shifts, so some samples land outside the photo
    theta = torch.tensor([[[0.9, -0.5, 0.2], [0.4, 1.1, -0.3]], [[1.3, 0.2, 0.1], [-0.2, 0.8, 0.25]]])
    grid = F.affine_grid(theta, [2, 8, 10, 7], align_corners=True)
    expected = F.grid_sample(pixels, grid, mode=sampling, padding_mode=padding, align_corners=True)
    mil_padding = {"zeros": "constant"}.get(padding, padding)
    got = OPS["resample"](x=pixels.numpy(), coordinates=grid.numpy(), sampling_mode=sampling, padding_mode=mil_padding,
                          padding_value=0.0, coordinates_mode="normalized_minus_one_to_one", align_corners=True)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    if sampling == "bilinear" and padding == "zeros":  # affine takes the same matrix and builds the grid itself
        got = OPS["affine"](x=pixels.numpy(), transform_matrix=theta.reshape(2, 6).numpy(), output_height=10,
                            output_width=7, sampling_mode="bilinear", padding_mode="constant", padding_value=0.0,
                            coordinates_mode="normalized_minus_one_to_one", align_corners=True)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_resize_and_crop_resize_match_interpolate(pixels):
    x = pixels.numpy()
    half_pixel = F.interpolate(pixels, size=(7, 17), mode="bilinear", align_corners=False)
    got = OPS["resize"](x=x, shape=[7, 17], resized_dims=2, interpolation_mode="LINEAR", sampling_mode="UNALIGN_CORNERS")
    np.testing.assert_allclose(got, half_pixel.numpy(), atol=1e-5)
    # a box over the whole photo with corner alignment is F.interpolate(align_corners=True), one crop per image
    corners = F.interpolate(pixels, size=(5, 9), mode="bilinear", align_corners=True)
    boxes = np.array([[0, 0, 11, 11], [0, 0, 11, 11]], np.float32)
    got = op_crop_resize_ios17(x=x, boxes=boxes, box_indices=np.array([1, 0]), target_height=5, target_width=9,
                                   sampling_mode="ALIGN_CORNERS")
    np.testing.assert_allclose(got, corners.numpy()[[1, 0]], atol=1e-5)
    # a box over the lower-right quarter, and one that hangs over the edge reads pad_value there
    got = op_crop_resize_ios17(x=x, boxes=np.array([[6, 6, 11, 11], [6, 6, 16, 11]], np.float32),
                                   box_indices=np.array([0, 0]), target_height=6, target_width=6,
                                   sampling_mode="ALIGN_CORNERS", pad_value=-7.0)
    np.testing.assert_allclose(got[0], x[0, :, 6:, 6:], atol=1e-6)
    np.testing.assert_allclose(got[1, :, :, :], np.concatenate([x[0, :, 6:, 6:][:, ::2], np.full((8, 3, 6), -7.0)], 1),
                               atol=1e-6)


def test_scaled_dot_product_attention_matches_pytorch(pixels):
    # the photo's 12x12 rows as 2 heads of tokens: [2, 2, 48, 12] queries, keys and values
    tokens = pixels.reshape(2, 2, 48, 12)
    query, key, value = tokens, tokens.flip(-2) * 0.5, tokens ** 0.5
    bool_mask = torch.ones(48, 48, dtype=torch.bool).tril()
    float_mask = torch.linspace(-2, 2, 48 * 48).reshape(48, 48)
    for mask in (None, bool_mask, float_mask):
        expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        got = OPS["scaled_dot_product_attention"](query=query.numpy(), key=key.numpy(), value=value.numpy(),
                                                  attn_mask=None if mask is None else mask.numpy())
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_bidirectional_lstm_and_gru_match_pytorch(pixels):
    # the photo's rows as sequences: 12 steps, batch 2 (the two crops), 8 x 12 features per step
    x = pixels.permute(2, 0, 1, 3).reshape(12, 2, 96)
    torch.manual_seed(0)
    lstm, gru = torch.nn.LSTM(96, 6, bidirectional=True), torch.nn.GRU(96, 6)
    h0, c0 = torch.randn(2, 2, 6), torch.randn(2, 2, 6)
    with torch.no_grad():
        expected, (h_n, c_n) = lstm(x, (h0, c0))
        expected_gru, h_gru = gru(x, h0[:1])

    def ifoz(weight):  # PyTorch's gate order i, f, g(z), o -> MIL's i, f, o, z
        i, f, z, o = weight.detach().chunk(4)
        return torch.cat([i, f, o, z]).numpy()

    got, h, c = OPS["lstm"](
        x=x.numpy(), initial_h=torch.cat([h0[0], h0[1]], 1).numpy(), initial_c=torch.cat([c0[0], c0[1]], 1).numpy(),
        weight_ih=ifoz(lstm.weight_ih_l0), weight_hh=ifoz(lstm.weight_hh_l0),
        bias=ifoz(lstm.bias_ih_l0 + lstm.bias_hh_l0), weight_ih_back=ifoz(lstm.weight_ih_l0_reverse),
        weight_hh_back=ifoz(lstm.weight_hh_l0_reverse), bias_back=ifoz(lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse),
        direction="bidirectional", output_sequence=True)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(h, torch.cat([h_n[0], h_n[1]], 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(c, torch.cat([c_n[0], c_n[1]], 1).numpy(), atol=1e-5)

    def roz(weight):  # PyTorch's r, z, n -> MIL's r, o(n), z
        r, z, n = weight.detach().chunk(3)
        return torch.cat([r, n, z]).numpy()

    got, h = OPS["gru"](x=x.numpy(), initial_h=h0[0].numpy(), weight_ih=roz(gru.weight_ih_l0),
                        weight_hh=roz(gru.weight_hh_l0), bias=roz(gru.bias_hh_l0), input_bias=roz(gru.bias_ih_l0),
                        reset_after=True, output_sequence=True)
    np.testing.assert_allclose(got, expected_gru.numpy(), atol=1e-5)
    np.testing.assert_allclose(h, h_gru[0].numpy(), atol=1e-5)


def test_ios18_per_group_palettization_and_blockwise_dequantization():
    """Case 1 of constexpr_lut_to_dense's documentation (two 2-bit palettes over blocks of 3 rows), and an
    int4-style blockwise shift-scale with one scale per 2x2 block."""
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3], np.uint8).reshape(6, 2)
    lut = np.array([1, 5, 9, 13, 2, 10, 18, 26], np.float16).reshape(2, 1, 4, 1)
    np.testing.assert_array_equal(OPS["constexpr_lut_to_dense"](indices=indices, lut=lut),
                                  [[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]])
    data = np.arange(16, dtype=np.int8).reshape(4, 4) - 8
    scale = np.array([[0.5, 1.0], [2.0, 4.0]], np.float32)
    offset = np.array([[1, 0], [0, -1]], np.int8)
    expected = np.repeat(np.repeat(scale, 2, 0), 2, 1) * (data - np.repeat(np.repeat(offset, 2, 0), 2, 1))
    np.testing.assert_array_equal(OPS["constexpr_blockwise_shift_scale"](data=data, scale=scale, offset=offset), expected)


def test_control_flow_program_runs_its_blocks(tmp_path):
    """A while_loop whose condition reads a value from the enclosing scope, and a cond choosing a branch."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    from mvkit.coreml.interpreter import Program

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,)), mb.TensorSpec(shape=(2,))], opset_version=ct.target.iOS16)
    def program(a, b):
        def grow(a, b):
            return mb.add(x=a, y=np.float32(1)), b

        def below_mean_of_b(a, b):
            return mb.less(x=mb.reduce_mean(x=a, axes=[0]), y=mb.reduce_mean(x=b, axes=[0]))

        counted = mb.while_loop(_cond=below_mean_of_b, _body=grow, loop_vars=(a, b))[0]
        positive = mb.greater(x=mb.reduce_sum(x=a, axes=[0]), y=np.float32(0))
        chosen = mb.cond(pred=positive, _true_fn=lambda: mb.mul(x=b, y=np.float32(2)),
                         _false_fn=lambda: mb.sub(x=b, y=np.float32(1)))
        return counted, chosen

    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
               compute_precision=ct.precision.FLOAT32).save(str(tmp_path / "flow.mlpackage"))
    loaded = Program(tmp_path / "flow.mlpackage")
    b = np.array([3.0, 4.0], np.float32)
    for a, steps, chosen in ((0.5, 3, b * 2), (-2.0, 6, b - 1)):
        outputs = list(loaded.run({"a": np.array([a], np.float32), "b": b}).values())
        np.testing.assert_allclose(outputs[0], [a + steps])  # counts up to the mean of b (3.5)
        np.testing.assert_allclose(outputs[1], chosen)


def test_stateful_program_keeps_its_buffer_across_runs(tmp_path):
    """An accumulator (x += input each prediction, the shape of a KV-cache update): the state lives in what
    make_state() returns, starts at zero, and a fresh state starts over."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from mvkit.coreml.interpreter import Program
    from mvkit.errors import MvkitError

    @mb.program(input_specs=[mb.StateTensorSpec((2, 3), dtype=types.fp16), mb.TensorSpec((2, 3), dtype=types.fp16)],
                opset_version=ct.target.iOS18)
    def program(total, x):
        added = mb.add(x=mb.read_state(input=total), y=x)
        mb.coreml_update_state(state=total, value=added)
        return mb.mul(x=added, y=np.float16(2))

    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18).save(
        str(tmp_path / "state.mlpackage"))
    loaded = Program(tmp_path / "state.mlpackage")
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    state = loaded.make_state()
    for step in (1, 2, 3):
        (doubled,) = loaded.run({"x": x}, state=state).values()
        np.testing.assert_array_equal(doubled, 2 * step * x)
    (doubled,) = loaded.run({"x": x}, state=loaded.make_state()).values()
    np.testing.assert_array_equal(doubled, 2 * x)
    with pytest.raises(MvkitError, match="make_state"):
        loaded.run({"x": x})


def test_random_ops_draw_from_their_distributions():
    """Random ops cannot match the phone's numbers, only its distributions: moments of 20,000 draws, seeds
    reproducible, degenerate parameters exact."""
    normal = OPS["random_normal"](shape=np.array([20000]), mean=2.0, stddev=0.5, seed=7)
    assert abs(normal.mean() - 2.0) < 0.02 and abs(normal.std() - 0.5) < 0.02
    np.testing.assert_array_equal(normal, OPS["random_normal"](shape=np.array([20000]), mean=2.0, stddev=0.5, seed=7))
    uniform = OPS["random_uniform"](shape=np.array([200, 100]), low=-1.0, high=3.0)
    assert uniform.shape == (200, 100) and uniform.min() >= -1 and uniform.max() < 3 and abs(uniform.mean() - 1) < 0.05
    assert abs(OPS["random_bernoulli"](shape=np.array([20000]), prob=0.3).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(OPS["random_bernoulli"](shape=np.array([4]), prob=1.0), np.ones(4))
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]))
    draws = OPS["random_categorical"](x=logits, mode="logits", size=20000, seed=1)
    assert draws.shape == (2, 20000)
    for row, expected in zip(draws, np.exp(logits)):
        np.testing.assert_allclose(np.bincount(row.astype(int), minlength=3) / 20000, expected, atol=0.015)


def test_scatter_index_validation_follows_the_opset():
    """Before iOS17 a negative scatter index counts from the end; from iOS17 it is out of bounds: with
    validate_indices the prediction fails (as on the phone), without it the update is dropped."""
    from mvkit.coreml.ops import implementation_of
    from mvkit.coreml.ops.common import PredictionError

    data = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    updates = np.array([[10, 20, 30], [40, 50, 60]], np.float32)
    indices = np.array([-1, 0])
    ios16, ios17 = implementation_of("scatter", "CoreML6"), implementation_of("scatter", "CoreML7")
    np.testing.assert_array_equal(ios16(data=data, indices=indices, updates=updates, mode="update"), updates[::-1])
    np.testing.assert_array_equal(ios17(data=data, indices=indices, updates=updates, mode="update"),
                                  [[40, 50, 60], [4, 5, 6]])
    with pytest.raises(PredictionError, match="out of bounds"):
        ios17(data=data, indices=indices, updates=updates, mode="update", validate_indices=True)
    with pytest.raises(PredictionError, match="out of bounds"):
        implementation_of("scatter_nd", "CoreML7")(data=data, indices=np.array([[0, 3]]), updates=np.array([1.0]),
                                                    validate_indices=True)


def test_fp16_constants_are_converted_once_and_forgotten_with_their_program():
    """An fp16 program's weights get one shared, read-only float32 copy; values made at run time get their own;
    a constant's copy goes when the constant does (no growth over many loaded packages)."""
    import gc

    from mvkit.coreml.ops.common import _F32_OF_CONSTANT, _f32, register_constant

    weight = register_constant(np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4))
    first, second = _f32(weight), _f32(weight)
    assert first is second and first.dtype == np.float32 and np.array_equal(first, weight.astype(np.float32))
    with pytest.raises(ValueError):
        first += 1  # shared between ops: never changed in place
    computed = weight * np.float16(2)
    assert _f32(computed) is not _f32(computed)
    key = id(weight)
    del weight, first, second
    gc.collect()
    assert key not in _F32_OF_CONSTANT
