"""Run directories, the rank-aware stage graph, the standard stages and the demo pipelines.

>>> from wsss.pipeline import run_config, run_pipeline, run_demo, run_comparison
>>> result = run_pipeline("runs/lpcam", run_config("voc12-lpcam-irn", ["data.root=VOC2012"]))
>>> result = run_demo("runs/demo")  # = run_pipeline("runs/demo", run_config("synth-full"))
>>> result = run_comparison("runs/strategies-synth")  # every training strategy, one budget
"""

from wsss.pipeline.compare import (
    COMPARISON_RUNS,
    ComparisonResult,
    comparison_config,
    comparison_pipeline,
    comparison_table,
    run_comparison,
)
from wsss.pipeline.config import (
    DemoSection,
    EvalSection,
    MapsSection,
    PipelineConfig,
    ReportSection,
    RunSection,
    pipeline_config,
    pipeline_presets,
)
from wsss.pipeline.core import FunctionStage, Pipeline, Stage, StageReport, library_versions
from wsss.pipeline.demo import DemoResult, demo_config, demo_pipeline, run_demo
from wsss.pipeline.graph import build_pipeline
from wsss.pipeline.rundir import RunDir, results_entry
from wsss.pipeline.runner import (
    RunResult,
    rebuild_report,
    run_config,
    run_pipeline,
    stored_pipeline,
)
from wsss.pipeline.segmentation import (
    SegmentationEvalStage,
    SegmentationSection,
    SegmentationStage,
    segmentation_stages,
)
from wsss.pipeline.stages import (
    DataSpec,
    EvalStage,
    MapsStage,
    PrototypeStage,
    ReportStage,
    SynthStage,
    TrainStage,
)

__all__ = [
    "COMPARISON_RUNS",
    "ComparisonResult",
    "DataSpec",
    "DemoResult",
    "DemoSection",
    "EvalSection",
    "EvalStage",
    "FunctionStage",
    "MapsSection",
    "MapsStage",
    "Pipeline",
    "PipelineConfig",
    "PrototypeStage",
    "ReportSection",
    "ReportStage",
    "RunDir",
    "RunResult",
    "RunSection",
    "SegmentationEvalStage",
    "SegmentationSection",
    "SegmentationStage",
    "Stage",
    "StageReport",
    "SynthStage",
    "TrainStage",
    "build_pipeline",
    "comparison_config",
    "comparison_pipeline",
    "comparison_table",
    "demo_config",
    "demo_pipeline",
    "library_versions",
    "pipeline_config",
    "pipeline_presets",
    "rebuild_report",
    "results_entry",
    "run_comparison",
    "run_config",
    "run_demo",
    "run_pipeline",
    "segmentation_stages",
    "stored_pipeline",
]
