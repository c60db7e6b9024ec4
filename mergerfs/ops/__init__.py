"""The filesystem's operations, one module per group of FUSE operations (as
upstream keeps one source file per operation). Each module holds a mixin of
:class:`~mergerfs.ops.core.Core`; :class:`mergerfs.fs.FileSystem` is all of
them together.
"""
