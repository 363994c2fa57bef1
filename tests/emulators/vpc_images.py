# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Images and operating systems of the VPC emulator.

Register routes in ``register(emulator)`` the way ``vpc_storage.register`` does (see the core's
docstring in ``vpc_server``): ``emulator.route(method, "/images/{id}", handler)``, records made with
``emulator.new_record("image", region, "images", ...)``, the test S3 server in ``emulator.s3``.
"""

from __future__ import annotations


def register(emulator):
    """Nothing registered yet."""
    del emulator
