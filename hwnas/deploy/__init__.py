"""The deployment stage: takes a chosen subnet, quantizes it with Intel Neural Compressor and gives
an OpenVINO IR bundle (IR with integer weights, tokenizer, manifest with measured figures and
checksums), plus verification, running and benchmarking of bundles.
"""
from hwnas.deploy.archive import extract_archive, write_archive
from hwnas.deploy.benchmark import bench_bundles
from hwnas.deploy.export import export_bundle
from hwnas.deploy.manifest import BundleManifest, read_manifest
from hwnas.deploy.quantize import QuantRecipe, make_recipe, quantize_model
from hwnas.deploy.runtime import generate_text
from hwnas.deploy.verify import verify_bundle

__all__ = ['QuantRecipe', 'make_recipe', 'quantize_model', 'BundleManifest', 'read_manifest', 'export_bundle', 'verify_bundle', 'generate_text', 'write_archive', 'extract_archive', 'bench_bundles']
