"""Stage: the generated project. Templates rendered into files, the safe writer that puts them
on disk, the manifest and the last build. Depends on `model`, `board`, the protocol and base."""
