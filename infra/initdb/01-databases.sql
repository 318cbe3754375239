-- One server, three databases (as `tspipe stack up`): the feature catalog (POSTGRES_DB),
-- MLflow and Prefect.
CREATE DATABASE tspipe_mlflow;
CREATE DATABASE tspipe_prefect;
