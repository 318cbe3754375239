-- One server, three databases: the feature catalog (POSTGRES_DB), MLflow and Prefect.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
