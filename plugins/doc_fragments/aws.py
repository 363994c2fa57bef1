# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # AWS connection options, named as amazon.aws names them (plugins/module_utils/_aws.py, AWS_OPTIONS).
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region to work in (for M(vmimage.replication.snapshot_copy), the source region).
      - If not set, the value of the E(AWS_REGION) or E(AWS_DEFAULT_REGION) environment variable.
      - A region AWS does not know is refused before any call.
    type: str
    aliases: [aws_region]
  profile:
    description:
      - A named profile of the AWS configuration files; not with O(aws_access_key).
      - If not set, the value of the E(AWS_PROFILE) environment variable.
    type: str
    aliases: [aws_profile]
  aws_access_key:
    description:
      - AWS access key id. If not set, the value of E(AWS_ACCESS_KEY_ID) or E(AWS_ACCESS_KEY);
        if none of these nor O(profile) is set, boto3's own chain (instance role, web identity, ...) is used.
    type: str
    aliases: [access_key]
  aws_secret_key:
    description:
      - AWS secret access key. If not set, the value of E(AWS_SECRET_ACCESS_KEY) or E(AWS_SECRET_KEY).
      - Never logged, returned or put on a command line.
    type: str
    aliases: [secret_key]
  session_token:
    description:
      - AWS session token for temporary credentials. If not set, the value of E(AWS_SESSION_TOKEN).
    type: str
    aliases: [aws_session_token]
  endpoint_url:
    description:
      - Use this URL for every AWS service instead of AWS's own endpoints (a private endpoint, a test server).
      - If not set, the value of E(AWS_URL) or E(AWS_ENDPOINT_URL).
    type: str
    aliases: [aws_endpoint_url]
requirements:
  - boto3 >= 1.34
  - botocore >= 1.34
"""

    # The attributes of the AWS modules: check mode with the same answer as a real run, no diff, re-runs change nothing.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return the same changed status as a real run, without changing anything.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
  idempotent:
    description: A second run with the same options changes nothing and reports changed=false.
    support: full
"""
