"""Local stand-ins for cloud services, for tests and benchmarks only (never imported by syncd).

- `postgres`: a throwaway PostgreSQL cluster on 127.0.0.1 (Debian's binaries, run as `postgres`).
- `moto_s3`: moto's S3 server on 127.0.0.1.
- `redshift_proxy` + `redshift_sql`: a Redshift-dialect wire-protocol proxy in front of
  PostgreSQL, so that the real `redshift_connector` talks to it; COPY from S3 is served from
  the moto server.
"""
