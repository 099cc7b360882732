"""Which grid each planned tensor reads from another: QAT's links between plans.

After planning (`quantization.planning`), each weighted layer's int32 bias grid is linked to its input's
range and kernel, each average pooling to its input's grid, each Concatenate to the ranges LiteRT requantizes
its inputs from, and each LayerNormalization to the grid its int8 MEAN rounds on. Every link follows the
tensor back through pass-through layers with `_site_of`.
"""

import keras


def _link_grids(model, plans, graph):
    """Links the grids one plan reads from another's: each weighted layer's int32 bias grid (input range and
    kernel).

    Also gives each "same" layer (average pooling) the range of its input, and each Concatenate the ranges
    its inputs are requantized from.

    The input range is the site whose tensor reaches the layer through
    range-preserving layers (pooling, reshape, dropout) or the model's own
    input site; where none is found (a subclassed model, a layer fed by a
    fixed-range output or by a nested model's input) the bias stays float.
    """
    by_id = {id(plan.layer): plan for plan in plans}
    model_plan = by_id.get(id(model))
    model_inputs = graph.inputs if model_plan is not None else []
    for plan in plans:  # in graph order: a "same" layer's producer is linked before it
        if plan.kind == "same":
            plan.shared_site = _input_site(graph, plan.layer, by_id, model_plan, model_inputs)
        elif _normalizes_last_axis(plan.layer) and plan.kind == "output" and not plan.float_output:
            # Only a range written by the producer itself: behind a pass-through layer (a reshape) the
            # converter's MEAN reads a dequantized float tensor (read from the file).
            producer = by_id.get(id(graph.single_producer(plan.layer)))
            if producer is not None and producer.kind not in ("pass", "same", "model"):
                plan.mean_site = producer.activation_site or producer.output_site
        elif (isinstance(plan.layer, keras.layers.Concatenate) and plan.output_site is not None
              and graph.call_count(plan.layer) == 1):
            sites = []
            for producer in graph.producers(plan.layer):
                site = _site_of(graph, producer, by_id, model_plan, model_inputs)
                chain = by_id.get(id(producer))
                if (site is not None and chain is not None and chain.kind == "pass" and chain.moved_onto is None
                        and not any(producer is model_input for model_input in model_inputs)):
                    chain.moved_from, chain.moved_onto, site = site, plan.output_site, None
                sites.append(None if site is plan.output_site else site)
            if any(site is not None for site in sites):
                plan.requantized_sites = sites
    for plan in plans:
        layer = plan.layer
        if plan.kind != "weights" or plan.float_output or getattr(layer, "bias", None) is None:
            continue
        separable = isinstance(layer, keras.layers.SeparableConv2D)
        wanted = "pointwise_kernel" if separable else "kernel"
        kernel = next((w for w in plan.weights
                       if any(name.lstrip("_") == wanted for name in w.attributes)), None)
        site = plan.inner_site if separable else _input_site(graph, layer, by_id, model_plan, model_inputs)
        if kernel is not None and site is not None:
            plan.bias_kernel, plan.bias_input_site = kernel, site


def _normalizes_last_axis(layer):
    if not isinstance(layer, keras.layers.LayerNormalization) or getattr(layer, "rms_scaling", False):
        return False
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(layer.input.shape) if getattr(layer, "_inbound_nodes", None) else None
    return len(axes) == 1 and rank is not None and axes[0] in (-1, rank - 1)


def _input_site(graph, layer, by_id, model_plan, model_inputs):
    """The range of the tensor `layer` reads, followed back through pass-through layers."""
    return _site_of(graph, graph.single_producer(layer), by_id, model_plan, model_inputs)


def _site_of(graph, producer, by_id, model_plan, model_inputs):
    """The range of `producer`'s output (None: it has none, or it cannot be told)."""
    while producer is not None:
        for i, model_input in enumerate(model_inputs):
            if producer is model_input:
                return model_plan.input_sites[i]
        plan = by_id.get(id(producer))
        if plan is None:
            return None
        if plan.activation_site is not None:  # the tensor after an unfused activation (swish)
            return plan.activation_site
        if plan.output_site is not None:
            return plan.output_site
        if plan.kind == "same" and plan.shared_site is not None:
            return plan.shared_site
        if plan.kind not in ("pass", "same"):
            return None
        producer = graph.single_producer(producer)
    return None
