"""The hardware stage: takes a target CPU definition (profiles/*.toml) and subnets, and gives
OpenVINO IRs, measured latency (TTFT, TPOT, throughput) on this host, a profile and the latency
model fitted on it.
"""
from hwnas.hardware.host import HostInfo, detect_host
from hwnas.hardware.irexport import export_ir, export_ir_cached
from hwnas.hardware.latency_model import LatencyModel, fit_latency_model
from hwnas.hardware.measure import Measurement, measure_ir, measure_many
from hwnas.hardware.profile import Profile, load_profile, run_profile
from hwnas.hardware.targets import Target, available_targets, load_target

__all__ = ['Target', 'load_target', 'available_targets', 'HostInfo', 'detect_host', 'export_ir', 'export_ir_cached', 'Measurement', 'measure_ir', 'measure_many', 'Profile', 'run_profile', 'load_profile', 'LatencyModel', 'fit_latency_model']
