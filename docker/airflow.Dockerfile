# Airflow 3.3.2 with this provider installed from the repository.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client && rm -rf /var/lib/apt/lists/*
COPY --chown=airflow:root . /opt/airflow-provider-batchai
USER airflow
RUN pip install --no-cache-dir -e /opt/airflow-provider-batchai "apache-airflow==3.3.2" scikit-learn pillow
