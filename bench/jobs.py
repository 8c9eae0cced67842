"""The jobs the benchmarks write and read: map imports of a realistic size."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from jobstatus.v1 import map_import_pb2 as mi

IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS
FOOTPRINT = (
    "POLYGON((34.7681 32.0853, 34.8012 32.0853, 34.8012 32.1147, 34.7681 32.1147, 34.7681 32.0853))"
)


def map_import(job_id: str, progress: int) -> mi.MapImport:
    """A map import as an exporter reports it while it runs."""
    job = mi.MapImport(
        import_request_id=job_id,
        meta_data=mi.MapImportMetaData(
            job_id=48213,
            progress=progress,
            size=734_003_200,
            area=11_520_000,
            footprint=FOOTPRINT,
            zoom_level=16,
            file_name=f"{job_id}.gpkg",
        ),
    )
    job.meta_data.export_start.FromSeconds(1_767_225_600)
    return job


def update_request(job_id: str, progress: int) -> mi.UpdateMapImportRequest:
    """Move the job to InProgress with this progress (a change whenever progress moves)."""
    return mi.UpdateMapImportRequest(
        map_import=mi.MapImport(
            import_request_id=job_id,
            status=IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=progress),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["status", "meta_data.progress"]),
    )


def job_ids(prefix: str, count: int) -> list[str]:
    """`count` ids of the same length, so every job's message has the same size."""
    return [f"{prefix}-{index:06d}" for index in range(count)]
