"""Packaging: the top-level folders map into one import package, ``airflow_batchai``.

The tree reads as the design drew it (provider/, hooks/, operators/ ...) while imports stay
namespaced: ``provider/records.py`` is ``airflow_batchai.records``.
"""

from pathlib import Path

from setuptools import setup

PACKAGE_DIRS = {
    "airflow_batchai": "provider",
    "airflow_batchai.agent": "provider/agent",
    "airflow_batchai.transport": "provider/transport",
    "airflow_batchai.pools": "provider/pools",
    "airflow_batchai.control": "provider/control",
    "airflow_batchai.data": "provider/data",
    "airflow_batchai.spec": "provider/spec",
    "airflow_batchai.scheduling": "provider/scheduling",
    "airflow_batchai.slurm": "provider/slurm",
    "airflow_batchai.reading": "provider/reading",
    "airflow_batchai.restapi": "provider/restapi",
    "airflow_batchai.restapi.routers": "provider/restapi/routers",
    "airflow_batchai.hooks": "hooks",
    "airflow_batchai.operators": "operators",
    "airflow_batchai.sensors": "sensors",
    "airflow_batchai.triggers": "triggers",
    "airflow_batchai.ui": "ui",
}

setup(
    name="airflow-provider-batchai",
    version="0.1.0",
    description="Run Azure Batch AI job specs on your own GPU nodes, orchestrated by Apache Airflow",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    package_data={"airflow_batchai": ["py.typed"]},
    install_requires=[
        "pydantic>=2.6,<3",
        "paramiko>=3.4",
        "cryptography>=42",
        "azure-storage-blob>=12.19",
        "azure-storage-file-share>=12.15",
        "azure-identity>=1.15",
        "azure-mgmt-compute>=34",  # pools of Azure VMs (pools/azurevms.py): imported only when a connection names them
        "fastapi>=0.110",  # the REST API (restapi/); Airflow's api-server brings them too
        "uvicorn>=0.27",
        # training curves on the job page: TensorBoard's own event-file reader (ui/, reading/scalars.py);
        # PyTorch's SummaryWriter needs it on the nodes too
        "tensorboard>=2.16",
    ],
    extras_require={
        "airflow": ["apache-airflow>=3.0"],
        "bench": ["apache-airflow-providers-ssh>=4.0"],
        # what the example DAGs' jobs import on the nodes (the distributed PyTorch one, the scoring and retrain ones;
        # tensorboard, for the curves, is a requirement of the provider itself). PyPI's torch is the CUDA build: for
        # CPU nodes install torch first from https://download.pytorch.org/whl/cpu (scripts/quickstart.sh does), and
        # this extra keeps it.
        "examples": ["torch>=2.1", "scikit-learn>=1.3", "numpy>=1.24", "pillow>=10"],
        "test": [
            "apache-airflow==3.3.2",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # scripts/test.sh runs the suite on three workers
            "ruff>=0.6",
            "scikit-learn>=1.3",
            "numpy>=1.24",
            "pillow>=10",  # the batch scoring example reads and writes frames
            "pyyaml>=6",
            "mypy>=1.10",
            "selenium>=4.20,<4.36",  # drives headless Chromium through the Airflow UI (newer ones need a newer certifi)
            "apache-airflow-providers-openlineage>=2.0",  # the lineage facets are tested against the real classes
            "msrest>=0.7",
            "azure-mgmt-batchai==7.0.0",  # users' SDK code runs against our REST API in the tests
        ],
    },
    entry_points={
        "console_scripts": ["batchai = airflow_batchai.cli:main"],
        "apache_airflow_provider": ["provider_info = airflow_batchai.provider_info:get_provider_info"],
        # Airflow loads provider plugins only with [core] lazy_load_providers off; the entry point always works
        "airflow.plugins": [
            "batchai = airflow_batchai.ui.plugin:BatchAIPlugin",
            # makes the connection list's Test button work for batchai connections on Airflow 3.3.2
            "batchai_connection_test = airflow_batchai.hooks.connection_test:BatchAIConnectionTestPlugin",
        ],
    },
)
