# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # The options of provider and target openstack (plugins/module_utils/_provider_options.py, OPENSTACK); names as openstack.cloud has them.
    DOCUMENTATION = r"""
options:
  openstack:
    description:
      - An OpenStack region whose Glance receives the images, with O(ignore:target=openstack); reached through openstacksdk.
      - With O(ignore:provider=openstack), the region of the source server, a volume-backed Nova server. Its boot volume is
        snapshotted in Cinder (with C(force), the guest keeps running), the snapshot marked in its metadata (C(created-by),
        C(source-server), C(snapshot-time)); a volume C(<snapshot>-conv) made from it is attached to the conversion host's
        server and found by its serial (the volume id). A restore is Cinder's revert, in place, to the volume's latest
        snapshot, while the volume is detached.
      - Images are uploaded as C(disk_format=qcow2), C(container_format=bare) and named C(<server>-<YYYYMMDD-HHMMSS>) (the snapshot
        time); the newest is renamed C(<server>-latest) once it is active. The collection's state is in image properties
        (C(vmimage_created_by), C(vmimage_server), C(vmimage_snapshot_time), C(vmimage_sha256), C(vmimage_key)); images without them are
        never renamed or deleted.
      - Glance's C(os_hash_value) is checked against the hash of the bytes sent; on a mismatch the new image is deleted and the import fails.
    type: dict
    suboptions:
      cloud:
        description:
          - Name of the cloud in C(clouds.yaml) (found through E(OS_CLIENT_CONFIG_FILE), the current directory or
            C(~/.config/openstack/)).
        type: str
      auth:
        description:
          - Authentication, instead of (or on top of) O(openstack.cloud), for example C(auth_url), C(username), C(password),
            C(project_name), C(user_domain_name), C(project_domain_name), or an application credential.
          - Never logged, returned or put in an error message.
        type: dict
      auth_type:
        description: keystoneauth plugin name (V(password), V(v3applicationcredential), ...); default is the cloud's.
        type: str
      region_name:
        description: Region whose endpoints (image; block-storage and compute for the provider) are used.
        type: str
      interface:
        description: Endpoint interface taken from the service catalog.
        type: str
        choices: [public, internal, admin]
        default: public
        aliases: [endpoint_type]
      validate_certs:
        description: Whether to check TLS certificates; default is the cloud's (true).
        type: bool
        aliases: [verify]
      ca_cert:
        description: CA bundle that signs the endpoints' certificates.
        type: path
        aliases: [cacert]
      wait:
        description: Target only - wait until the uploaded image is C(active) before it is checked and rotated.
        type: bool
        default: true
      timeout:
        description: Seconds to wait for the image to become C(active), or a snapshot, volume or attachment to be ready.
        type: int
        default: 1800
      wait_sleep:
        description: Seconds between two looks at something being made (an image, a snapshot, a volume); default the module's O(ignore:wait_sleep), else 2.
        type: float
      min_disk:
        description: C(min_disk) (GiB) of the new image, normally the source volume's size.
        type: int
      min_ram:
        description: C(min_ram) (MiB) of the new image.
        type: int
      properties:
        description:
          - Properties copied onto the new image, normally the source image's C(os_*) / C(hw_*) ones (C(os_distro), C(os_type)...).
          - Keys starting with C(vmimage_) are the collection's and are ignored here.
        type: dict
      visibility:
        description: Visibility of the new image.
        type: str
        choices: [private, shared, community, public]
        default: private
      import_method:
        description:
          - Target only - how the image's bytes reach Glance. V(upload) streams the object through the host that runs the task
            (C(PUT /v2/images/{id}/file)).
          - V(web-download) lets Glance fetch the object itself (the interoperable import) from a presigned URL valid for
            O(openstack.timeout) seconds (the bucket's HMAC keys sign it). Where Glance does not offer web-download, or its
            import filtering refuses the URL, the image is uploaded instead and RV(ignore:image.import_note) says why. The URL
            is never logged or returned. What Glance stored is checked against the object, read by the host that runs the task.
        type: str
        choices: [upload, web-download]
        default: upload
      by_id_dir:
        description:
          - Provider only - where the conversion host's kernel lists disks by serial; a volume attached by
            M(vmimage.replication.volume_attach) is C(<by_id_dir>/virtio-<first 20 characters of the volume id>).
        type: path
        default: /dev/disk/by-id
      direct_snapshot:
        description:
          - Provider only - take the snapshot of a volume in Ceph the direct way (seed 002, Nova's direct snapshot) - the volume's
            RBD image is snapshotted, cloned into the images pool and flattened, and Glance records only its location
            (C(rbd://<fsid>/<images_pool>/<id>/snap)); no data passes through any host. The snapshot is then a Glance image, read
            through a Cinder volume made from it.
          - Where it is not allowed - the volume is not in Ceph, the Ceph user may not write the images pool, Glance refuses the
            location (Glance lets only users with the C(service) role add one) - what it made is removed and the standard
            Cinder snapshot is taken; the snapshot's C(direct_fallback) says why.
          - Runs the C(rbd) and C(ceph) commands of ceph-common on the host that runs the task.
        type: dict
        suboptions:
          ceph_conf:
            description: The cluster's C(ceph.conf).
            type: path
            default: /etc/ceph/ceph.conf
          ceph_user:
            description: The Ceph client id (C(client.<id>)); it needs C(profile rbd) on both pools.
            type: str
            default: admin
          keyring:
            description: Its keyring, when C(ceph.conf) does not name it.
            type: path
          volumes_pool:
            description: Cinder's pool; a volume is the RBD image C(volume-<id>) there.
            type: str
            default: volumes
          images_pool:
            description: Glance's pool.
            type: str
            default: images
"""
