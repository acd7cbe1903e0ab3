"""Bytes on a transport: the envelope, frames, blobs and the mailbox that writes and reads messages. No Flower, no roles.

See ``docs/architecture.md``."""
