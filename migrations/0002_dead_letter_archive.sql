-- Dead letters drained from Redis: draining never destroys a job's record.
CREATE TABLE dead_letter_archive (
    id          uuid PRIMARY KEY,
    queue       text NOT NULL,
    job         jsonb NOT NULL,
    attempts    integer NOT NULL,
    last_error  text NOT NULL,
    failed_at   timestamptz NOT NULL,
    object_type text NOT NULL,
    object_id   uuid NOT NULL,
    drained_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_archive_queue_idx ON dead_letter_archive (queue, failed_at);
CREATE INDEX dead_letter_archive_object_idx ON dead_letter_archive (object_id);
