# A PlatformIO `pre:` extra script that shares compiled library and framework objects (TFLM
# above all) between projects, models and boards' rebuilds, through an SCons CacheDir.
#
# tinyforge adds it to every `pio run` it starts, through PLATFORMIO_EXTRA_SCRIPTS (appended
# to a project's own extra_scripts), with the cache folder in TINYFORGE_BUILD_CACHE_DIR
# (toolchain/pio.py). Nothing of it is in the rendered platformio.ini, so projects stay
# machine-independent and a plain `pio run` by hand builds as PlatformIO always does.
#
# Why not PlatformIO's own `build_cache_dir`: with it, PlatformIO 6.2.0 also moves SCons'
# signature database (.sconsign) into the shared folder, keyed by paths relative to each
# project. Two projects then overwrite each other's records, and a project whose sources
# became what another project last built is believed up to date: measured, its firmware kept
# the old code. Here every project keeps its own .sconsign; only objects are shared.
#
# Why a CacheDir class of our own: SCons keys a cached file by its children's content, its
# command line (include paths excluded) and its own path. PlatformIO builds a library in
# `$BUILD_DIR/lib<3 hex digits of a hash of the library's folder>/`, and a library that
# PlatformIO downloaded lives inside each project (.pio/libdeps/ENV/NAME), so that path differs
# between projects and nothing would ever be shared. The hash is left out of the key; every
# source and header still is, by content, so a different library can never match.
#
# The key also holds the platform's and its packages' names and versions: SCons does not see
# the compiler itself, nor headers it finds only through response files (the Arduino mbed core
# passes its include folders as `@includes.txt`), so an updated toolchain or framework must
# not match objects compiled with the old one.
#
# Only objects and archives outside the project's own `src/` are cached: the sketch, the
# model array and the firmware change with every model and compile in seconds anyway.

import json
import os
import re

import SCons.CacheDir  # pylint: disable=import-error
import SCons.Util  # pylint: disable=import-error

Import("env")  # noqa: F821  pylint: disable=undefined-variable

ENV_VAR = "TINYFORGE_BUILD_CACHE_DIR"
_LIBRARY_BUILD_DIR = re.compile(r"(^|/)lib[0-9a-f]{3}/")
_SHARED_SUFFIXES = (".o", ".a")


class _SharedObjectCache(SCons.CacheDir.CacheDir):
    """A CacheDir for library and framework objects, keyed independently of the project."""

    project_src = None
    packages = ""

    def _shared(self, node):
        path = node.get_internal_path().replace(os.sep, "/")
        return path.endswith(_SHARED_SUFFIXES) and not path.startswith(self.project_src)

    def cachepath(self, node):
        if not self.is_enabled() or not self._shared(node):
            return None, None
        sigs = [child.get_cachedir_csig() for child in node.children()]
        sigs.append(node.get_contents_sig())
        sigs.append(self.packages)
        sigs.append(_LIBRARY_BUILD_DIR.sub(r"\1lib/", node.get_internal_path()
                                           .replace(os.sep, "/")))
        sig = SCons.Util.hash_collect(sigs)
        subdir = os.path.join(self.path, sig[:self.config["prefix_len"]].upper())
        return subdir, os.path.join(subdir, sig)

    def retrieve(self, node):
        return self._shared(node) and super().retrieve(node)

    def push(self, node):
        if self._shared(node):
            return super().push(node)
        return None

    def push_if_forced(self, node):
        if self._shared(node):
            return super().push_if_forced(node)
        return None


def _enable():
    folder = os.environ.get(ENV_VAR, "")
    if not folder:
        return
    if env.subst("$BUILD_CACHE_DIR"):  # noqa: F821
        # The user's own build_cache_dir: PlatformIO has already set it up; keep it.
        return
    try:
        os.makedirs(folder, exist_ok=True)
        usable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    if not usable:  # a cache is never worth failing a build for
        print("tinyforge: cannot write the shared object cache %s; building without it "
              "(set TINYFORGE_BUILD_CACHE_DIR to a writable folder, or empty)" % folder)
        return
    src = env.Dir("$BUILD_SRC_DIR").get_internal_path()  # noqa: F821
    _SharedObjectCache.project_src = src.replace(os.sep, "/") + "/"
    platform = env.PioPlatform()  # noqa: F821
    used = [platform.name, platform.version, platform.dump_used_packages()]
    _SharedObjectCache.packages = SCons.Util.hash_signature(json.dumps(used, sort_keys=True))
    env.CacheDir(folder, custom_class=_SharedObjectCache)  # noqa: F821


_enable()
