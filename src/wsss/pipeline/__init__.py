"""Run directories, the stage graph, the standard stages and the demo pipeline.

>>> from wsss.pipeline import RunDir, run_demo
>>> result = run_demo("runs/demo")  # synthetic data, training, CAM, LPCAM, report
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
from wsss.pipeline.core import (
    FunctionStage,
    Pipeline,
    RunDir,
    Stage,
    StageReport,
    library_versions,
    results_entry,
)
from wsss.pipeline.demo import DemoConfig, DemoResult, demo_config, demo_pipeline, run_demo
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
    "DemoConfig",
    "DemoResult",
    "EvalStage",
    "FunctionStage",
    "MapsStage",
    "Pipeline",
    "PrototypeStage",
    "ReportStage",
    "RunDir",
    "Stage",
    "StageReport",
    "SynthStage",
    "TrainStage",
    "comparison_config",
    "comparison_pipeline",
    "comparison_table",
    "demo_config",
    "demo_pipeline",
    "library_versions",
    "results_entry",
    "run_comparison",
    "run_demo",
]
