"""Build the stage and the warehouse a configuration names, importing drivers lazily.

This is the one place that maps a provider's name to adapters; the core only sees the
`Stage` and `Warehouse` protocols.
"""

from __future__ import annotations

from syncd.config import Settings
from syncd.errors import ConfigError
from warehouses.base import Stage, Warehouse


def build_stage(settings: Settings) -> Stage:
    """The stage for the provider: a local folder for duckdb, postgres and local; S3 for aws."""
    if settings.provider in ("duckdb", "postgres", "local") or (
        settings.provider == "snowflake" and settings.snowflake.stage == "internal"
    ):
        from warehouses.local import LocalStage

        return LocalStage(settings.local.save_dir, settings.file_prefix)
    if settings.provider == "aws" or (
        settings.provider == "snowflake" and settings.snowflake.stage == "s3"
    ):
        from warehouses.s3 import S3Stage

        s3 = settings.s3
        return S3Stage(
            s3.bucket,
            settings.file_prefix,
            region=s3.region,
            endpoint_url=s3.endpoint_url,
            server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id,
            timeout=s3.timeout.total_seconds(),
        )
    if settings.provider in ("gcp", "snowflake"):
        from warehouses.gcs import GCSStage

        gcs = settings.gcs
        return GCSStage(
            gcs.bucket_name,
            gcs.key_prefix + settings.file_prefix,
            project=settings.bigquery.project or None,
            endpoint_url=gcs.endpoint_url,
        )
    raise ConfigError(
        [f"Provider: {settings.provider!r} is not supported by this version of syncd yet"]
    )


def build_warehouse(settings: Settings, stage: Stage, *, read_only: bool = False) -> Warehouse:
    """The warehouse for the provider, or the checkpoint-only one in StorageOnly mode."""
    if settings.storage_only:
        from warehouses.storage_only import StorageOnlyWarehouse

        return StorageOnlyWarehouse(stage, use_start_time=settings.local.use_start_time)
    if settings.provider == "duckdb":
        from warehouses.duckdb import DuckDBWarehouse

        db = settings.duckdb
        return DuckDBWarehouse(
            db.path,
            export_table=db.export_table,
            sync_table=db.sync_table,
            rejects_table=db.rejects_table,
            read_only=read_only,
            lock_wait=db.lock_wait.total_seconds(),
            reader_window=db.reader_window.total_seconds(),
        )
    if settings.provider == "postgres":
        from warehouses.postgres import PostgresWarehouse

        pg = settings.postgres
        return PostgresWarehouse(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            password=pg.password.reveal(),
            dbname=pg.db,
            sslmode=pg.ssl_mode,
            schema=pg.database_schema,
            export_table=pg.export_table,
            sync_table=pg.sync_table,
            rejects_table=pg.rejects_table,
        )
    if settings.provider == "aws":
        from warehouses.redshift import RedshiftWarehouse, parquet_region_problem

        rs = settings.redshift
        problem = parquet_region_problem(rs.host, rs.region)
        if settings.staged_format == "parquet" and problem:
            raise ConfigError([problem])
        return RedshiftWarehouse(
            host=rs.host,
            port=rs.port,
            database=rs.db,
            user=rs.user,
            password=rs.password.reveal(),
            schema=rs.schema,
            export_table=rs.export_table,
            sync_table=rs.sync_table,
            rejects_table=rs.rejects_table,
            iam_role=rs.iam_role,
            credentials=rs.credentials.reveal(),
            region=rs.region,
            varchar_max=rs.varchar_max,
            custom_vars=rs.custom_vars_type,
            ssl=rs.ssl,
            statement_timeout=rs.statement_timeout.total_seconds(),
        )
    if settings.provider == "snowflake":
        from pathlib import Path

        from warehouses.snowflake import SnowflakeWarehouse

        sf = settings.snowflake
        return SnowflakeWarehouse(
            account=sf.account,
            user=sf.user,
            database=sf.database,
            password=sf.password.reveal(),
            private_key_file=Path(sf.private_key_file) if sf.private_key_file else None,
            private_key_passphrase=sf.private_key_passphrase.reveal(),
            role=sf.role,
            warehouse=sf.warehouse,
            schema=sf.database_schema,
            export_table=sf.export_table,
            sync_table=sf.sync_table,
            rejects_table=sf.rejects_table,
            stage=sf.stage,
            storage_integration=sf.storage_integration,
            aws_key_id=sf.aws_key_id,
            aws_secret_key=sf.aws_secret_key.reveal(),
            host=sf.host,
            port=sf.port if sf.host else 0,
            protocol=sf.protocol if sf.host else "",
        )
    if settings.provider == "gcp":
        from warehouses.bigquery import BigQueryWarehouse

        bq = settings.bigquery
        return BigQueryWarehouse(
            bq.project,
            bq.dataset,
            export_table=bq.export_table,
            sync_table=bq.sync_table,
            rejects_table=bq.rejects_table,
            location=bq.location,
            partition_expiration=bq.partition_expiration,
            clustering=bq.clustering,
            require_partition_filter=bq.require_partition_filter,
            endpoint_url=bq.endpoint_url,
        )
    raise ConfigError(
        [f"Provider: {settings.provider!r} is not supported by this version of syncd yet"]
    )


def destination(settings: Settings) -> str:
    """Where the configured provider writes the data, in a few words for a person (e.g. the
    note a command run on the defaults prints)."""
    if settings.storage_only or settings.provider == "local":
        return f"files in {settings.local.save_dir.resolve()}"
    if settings.provider == "duckdb":
        path = settings.duckdb.path
        return (
            "an in-memory DuckDB"
            if str(path) == ":memory:"
            else f"the DuckDB file {path.resolve()}"
        )
    if settings.provider == "postgres":
        pg = settings.postgres
        return f"PostgreSQL database {pg.db} on {pg.host}:{pg.port}"
    if settings.provider == "aws":
        rs = settings.redshift
        return (
            f"Redshift database {rs.db} on {rs.host}:{rs.port}, staged in s3://{settings.s3.bucket}"
        )
    if settings.provider == "snowflake":
        sf = settings.snowflake
        staged = {
            "s3": f"s3://{settings.s3.bucket}",
            "gcs": f"gs://{settings.gcs.bucket}",
            "internal": "the table's own stage",
        }[sf.stage]
        return f"Snowflake database {sf.database}.{sf.database_schema}, staged in {staged}"
    bq = settings.bigquery
    return f"BigQuery dataset {bq.dataset}, staged in gs://{settings.gcs.bucket}"
