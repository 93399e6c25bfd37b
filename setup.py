"""covtransfer: install with ``pip install torch==2.13.0`` first (CPU build), then ``pip install -e .[test]``."""

from setuptools import find_packages, setup

COMMANDS = {
    # command name: module under covtransfer.cli (each module exposes main(argv) and entry())
    "covtransfer_make_synthetic": "make_synthetic",
    "covtransfer_convert": "convert",
    "covtransfer_verify": "verify",
    "covtransfer_plan_and_preprocess": "plan_and_preprocess",
    "covtransfer_evaluate": "evaluate",
    "covtransfer_quantify": "quantify",
    "covtransfer_determine_postprocessing": "determine_postprocessing",
    "covtransfer_train": "train",
    "covtransfer_predict": "predict",
    "covtransfer_export_model": "export_model",
    "covtransfer_install_model": "install_model",
    "covtransfer_study": "study",
    "covtransfer_demo": "demo",
}

setup(
    name="covtransfer",
    version="0.1.0",
    description="Self-configuring 3D CT segmentation and transfer from non-COVID lung lesions to COVID-19",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["covtransfer", "covtransfer.*"]),
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "SimpleITK>=2.2",
        "acvl-utils",
        "tqdm",
        "matplotlib",
        "pydicom>=3.0",
        "highdicom>=0.23",
        "psutil",
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "batchgeneratorsv2==0.3.6", "submitit>=1.5", "openvino>=2024.0", "onnx"],
                    "cluster": ["submitit>=1.5"],
                    # faster CPU prediction (covtransfer.inference.cpu_runtime), used automatically when installed
                    "cpu-fast": ["openvino>=2024.0", "onnx"]},
    entry_points={"console_scripts": [f"{name}=covtransfer.cli.{module}:entry" for name, module in COMMANDS.items()]},
)
