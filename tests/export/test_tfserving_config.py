"""TF Serving config files: generated with the protos, and they parse back with the protos."""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from export.core.errors import BundleError
from export.deploy import tfserving as config

pytestmark = pytest.mark.unit


def test_models_config_round_trips_through_model_server_config():
    text = config.bundle_models_config({"dense": [1], "conv": [1, 2]})
    parsed = config.parse_models_config(text)
    assert text_format.MessageToString(parsed) == text
    assert config.served_models(text) == [
        {"name": "dense", "base_path": "/models/tfserving/dense", "platform": "tensorflow",
         "versions": [1], "labels": {"stable": 1}},
        {"name": "conv", "base_path": "/models/tfserving/conv", "platform": "tensorflow",
         "versions": [1, 2], "labels": {"stable": 2}},
    ]


def test_models_config_explicit_labels_and_prefix():
    text = config.models_config([("dense", "/srv/b/tfserving/dense", [1, 2])], labels={"stable": 1, "canary": 2})
    (model,) = config.served_models(text)
    assert model["labels"] == {"stable": 1, "canary": 2}
    assert model["base_path"] == "/srv/b/tfserving/dense"
    moved = config.served_models(config.rebase_models_config(text, "/srv/b", "/opt/bundle"))
    assert moved[0]["base_path"] == "/opt/bundle/tfserving/dense"


def test_models_config_rejects_label_on_unserved_version():
    with pytest.raises(BundleError, match=r"label 'stable' points at version 3, which is not served"):
        config.models_config([("dense", "/models/tfserving/dense", [1])], labels={"stable": 3})


def test_batching_config_round_trips_and_reads_as_settings():
    text = config.batching_config(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=2,
                                  max_enqueued_batches=10)
    params = config.parse_batching_config(text)
    assert params.max_batch_size.value == 8 and params.HasField("batch_timeout_micros")
    assert text_format.MessageToString(params) == text
    assert "max_batch_size {\n  value: 8\n}" in text  # the wrapper form TF Serving reads
    assert config.batching_settings(text) == {"max_batch_size": 8, "batch_timeout_micros": 0,
                                              "num_batch_threads": 2, "max_enqueued_batches": 10}
    assert config.batching_settings("") == config.BATCHING_DEFAULTS


def test_monitoring_config_round_trips():
    text = config.monitoring_config()
    parsed = config.parse_monitoring_config(text)
    assert parsed.prometheus_config.enable is True
    assert parsed.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize("parse, text, message", [
    (config.parse_batching_config, "max_batch_size: 3", "batching.config is not a valid BatchingParameters"),
    (config.parse_monitoring_config, "prometheus { }", "monitoring.config is not a valid MonitoringConfig"),
    (config.parse_models_config, "", "models.config lists no model"),
])
def test_bad_config_files_raise_bundle_error(parse, text, message):
    with pytest.raises(BundleError, match=message):
        parse(text)


def test_bad_batching_values_are_refused():
    with pytest.raises(BundleError, match="max_batch_size must be an integer >= 1, got 0"):
        config.batching_config(max_batch_size=0)
