#!/usr/bin/env python3
"""Reads a TensorBoard logdir with TensorBoard's own code and prints what it sees as one JSON object.

    python3 tests/train/tb_readback.py LOGDIR

Used by tests/train/test_tb_writer.cpp (TbReadBack.*), which compares it with metrics.jsonl and the configs.
Scalars come from the same data provider the dashboards use (plugin_event_multiplexer + MultiplexerDataProvider,
so dataclass migration applies); the HPARAMS view from the hparams plugin's own handlers (get_experiment,
list_session_groups), as its HTTP routes call them. Exit status 3 when tensorboard cannot be imported.
"""
import json
import sys

try:
    import tensorboard
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.data import provider as provider_lib
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import backend_context
    from tensorboard.plugins.hparams import get_experiment
    from tensorboard.plugins.hparams import list_session_groups
    from tensorboard.plugins.scalar import metadata as scalar_metadata
except ImportError as e:  # the caller tells the user; this is not a pass
    print("tensorboard is not importable: %s" % e, file=sys.stderr)
    sys.exit(3)


def value_of(v):
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return v.number_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "string_value":
        return v.string_value
    return None


def main(logdir):
    mux = plugin_event_multiplexer.EventMultiplexer(purge_orphaned_data=True)
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = context.RequestContext()
    out = {"tensorboard": tensorboard.__version__, "runs": {}}

    listing = provider.list_scalars(ctx, experiment_id="", plugin_name=scalar_metadata.PLUGIN_NAME)
    for run, tags in listing.items():
        data = provider.read_scalars(
            ctx,
            experiment_id="",
            plugin_name=scalar_metadata.PLUGIN_NAME,
            downsample=1 << 30,
            run_tag_filter=provider_lib.RunTagFilter(
                runs=[run], tags=list(tags)
            ),
        )
        out["runs"][run] = {
            tag: [[d.step, d.wall_time, d.value] for d in points] for tag, points in data.get(run, {}).items()
        }

    bctx = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=logdir))
    exp = get_experiment.Handler(ctx, bctx, "", api_pb2.GetExperimentRequest(include_metrics=True)).run()
    out["experiment"] = {
        "description": exp.description,
        "hparams": [
            {
                "name": h.name,
                "type": api_pb2.DataType.Name(h.type),
                "domain": [value_of(v) for v in h.domain_discrete.values],
                "differs": h.differs,
            }
            for h in exp.hparam_infos
        ],
        "metrics": [
            {"group": m.name.group, "tag": m.name.tag, "dataset": api_pb2.DatasetType.Name(m.dataset_type)}
            for m in exp.metric_infos
        ],
    }
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
        start_index=0,
        slice_size=1 << 20,
    )
    groups = list_session_groups.Handler(ctx, bctx, "", request).run()
    out["session_groups"] = [
        {
            "name": g.name,
            "hparams": {k: value_of(v) for k, v in g.hparams.items()},
            "metrics": {m.name.tag: m.value for m in g.metric_values},
            "sessions": [
                {
                    "name": s.name,
                    "status": api_pb2.Status.Name(s.status),
                    "start_time_secs": s.start_time_secs,
                    "end_time_secs": s.end_time_secs,
                    "model_uri": s.model_uri,
                    "metrics": {m.name.tag: [m.value, m.training_step] for m in s.metric_values},
                }
                for s in g.sessions
            ],
        }
        for g in groups.session_groups
    ]
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
