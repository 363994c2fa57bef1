# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # Options of the modules that read or write a server's images in the target image library.
    DOCUMENTATION = r"""
options:
  target:
    description:
      - The image library; its adapter answers every import the same way, and the rotation and retention rules are the same for all.
      - V(bucket_catalog) keeps the catalog in the bucket that holds the images.
      - V(ibm_vpc) registers the images in an IBM Cloud VPC region's image library (from their objects in the bucket).
    type: str
    choices: [bucket_catalog, ibm_vpc]
    default: bucket_catalog
  bucket:
    description:
      - Bucket that holds the image objects (and, with O(target=bucket_catalog), the catalog).
    type: str
    required: true
  prefix:
    description:
      - Key prefix under which each server has a folder C(<server>/) with its images and catalog.
    type: str
    default: images/
  server:
    description:
      - Name of the source server. Letters, digits, V(.), V(_) and V(-).
    type: str
    required: true
"""

    # Attributes of a module that only reads.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Reads only.
"""
