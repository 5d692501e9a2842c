"""`/api/jobs`: the queue and the history as ComfyUI 0.30's job list (what its editor's queue panel reads).

A job is `{"id", "status", "priority", "create_time", ...}`: status `pending` / `in_progress` for queued and
running prompts; from the history `completed`, `failed` or `cancelled` (interrupted), with
`execution_start_time` / `execution_end_time` (ms, from the recorded messages), `execution_error`,
`outputs_count` and `preview_output` (the first output image, with its `nodeId` and `mediaType`).
"""

from __future__ import annotations

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def _meta(extra: dict) -> tuple:
    info = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
    wf = info.get("workflow") if isinstance(info, dict) else None
    return extra.get("create_time"), wf.get("id") if isinstance(wf, dict) else None


def _pruned(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def queue_job(entry: list, status: str) -> dict:
    number, prompt_id, _, extra, _ = entry
    create_time, workflow_id = _meta(extra)
    return _pruned({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                    "outputs_count": 0, "workflow_id": workflow_id})


def history_job(prompt_id: str, entry: dict, outputs: bool = False) -> dict:
    number, _, prompt, extra, _ = entry["prompt"]
    create_time, workflow_id = _meta(extra)
    status = entry.get("status") or {}
    start = end = error = None
    interrupted = False
    for event, data in status.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    kind = "completed" if status.get("status_str") != "error" else "cancelled" if interrupted else "failed"
    count, preview = 0, None
    for nid, ui in (entry.get("outputs") or {}).items():
        for media, items in ui.items():
            if not isinstance(items, list):
                continue
            count += len(items)
            if preview is None and media == "images" and items:
                preview = {**items[0], "nodeId": nid, "mediaType": media}
    job = _pruned({"id": prompt_id, "status": kind, "priority": number, "create_time": create_time,
                   "execution_start_time": start, "execution_end_time": end, "execution_error": error,
                   "outputs_count": count, "preview_output": preview, "workflow_id": workflow_id})
    if outputs:
        job.update(outputs=entry.get("outputs") or {}, execution_status=status,
                   workflow={"prompt": prompt, "extra_data": extra})
    return job


def all_jobs(queue, outputs: bool = False) -> list[dict]:
    running, pending = queue.snapshot()
    jobs = [queue_job(e, "in_progress") for e in running] + [queue_job(e, "pending") for e in pending]
    jobs += [history_job(pid, entry, outputs) for pid, entry in queue.get_history().items()]
    return jobs


__all__ = ["JOB_STATUSES", "all_jobs", "history_job", "queue_job"]
