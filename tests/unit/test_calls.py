import keras
import numpy as np
from keras import ops

from keras_compress.core import calls


def dense():
    layer = keras.layers.Dense(2, use_bias=False, kernel_initializer="ones")
    layer.build((None, 3))
    return layer


def test_wrappers_stack_and_come_off_in_any_order():
    layer = dense()
    x = np.ones((1, 3), "float32")
    calls.wrap_call(layer, "a", lambda inner: lambda *a, **k: inner(*a, **k) + 1.0)
    calls.wrap_call(layer, "b", lambda inner: lambda *a, **k: inner(*a, **k) * 10.0)
    np.testing.assert_allclose(np.array(layer(x)), (3.0 + 1.0) * 10.0)
    calls.unwrap_call(layer, "a")  # the first one added, under the other
    np.testing.assert_allclose(np.array(layer(x)), 3.0 * 10.0)
    calls.unwrap_call(layer, "b")
    np.testing.assert_allclose(np.array(layer(x)), 3.0)
    assert "call" not in vars(layer)


def test_views_compose_and_an_outer_wrapper_can_use_the_viewed_value():
    layer = dense()
    x = np.ones((1, 3), "float32")
    calls.add_view(layer, layer._kernel, "double", lambda v: v * 2.0)
    calls.add_view(layer, layer._kernel, "plus", lambda v: v + 1.0)
    np.testing.assert_allclose(np.array(layer(x)), 3 * (1.0 * 2.0 + 1.0))

    def outer(inner):  # replaces the kernel by a function of the viewed value
        def call(*args, **kwargs):
            object.__setattr__(layer, "_kernel", -calls.view_value(layer, layer._kernel))
            try:
                return inner(*args, **kwargs)
            finally:
                object.__setattr__(layer, "_kernel", variable)
        return call

    variable = layer._kernel
    calls.wrap_call(layer, "outer", outer)
    np.testing.assert_allclose(np.array(layer(x)), -9.0)  # not viewed twice
    calls.unwrap_call(layer, "outer")
    calls.remove_views(layer, "double")
    np.testing.assert_allclose(np.array(layer(x)), 3 * 2.0)
    calls.remove_views(layer, "plus")
    assert "call" not in vars(layer) and layer._kernel is variable
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), 3.0)


def test_a_view_of_a_variable_the_layer_does_not_hold_is_refused():
    layer = dense()
    assert calls.add_view(layer, keras.Variable(np.zeros((3, 2))), "x", lambda v: v) is False
    assert "call" not in vars(layer)
