"""Build the one C extension, ``media._fastpath`` (the relay's per-packet path: passthrough and transcoding).

Everything else about the package lives in ``pyproject.toml``. The extension is optional: where it cannot
be compiled (no C compiler), installation still succeeds and media runs on the pure-Python relay, which
``media.fastpath`` reports at start-up.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "media._fastpath",
            ["media/_fastpath.c", "media/_transcode.c"],
            depends=["media/_transcode.h"],
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ],
            optional=True,
        )
    ]
)
