"""Group kernels (appliance.hub.group_kernels, BatchSpawner.group_kernel_paths): the job's
JUPYTER_PATH gets the directories of the user's Unix groups, from the admin's mapping only."""

import grp
import os
import pwd

import pytest
from traitlets import TraitError
from traitlets.config import Config

from appliance.hub.group_kernels import check_mapping, jupyter_path, kernel_dirs, unix_groups
from appliance.hub.spawner import BatchSpawner

MAPPING = {"belle2": ["/opt/group-kernels/belle2", "/sw/belle2/jupyter"],
           "upex": ["/sw/upex"], "both": ["/sw/belle2/jupyter"]}


def test_dirs_of_the_users_groups_in_the_mappings_order_each_once():
    assert kernel_dirs({"belle2", "both"}, MAPPING) == ["/opt/group-kernels/belle2",
                                                        "/sw/belle2/jupyter"]
    assert kernel_dirs({"upex"}, MAPPING) == ["/sw/upex"]
    assert kernel_dirs(set(), MAPPING) == [] and kernel_dirs({"other"}, MAPPING) == []


def test_jupyter_path_keeps_what_is_there_first():
    assert jupyter_path(["/a", "/b"]) == "/a:/b"
    assert jupyter_path(["/a", "/b"], "/site:/a") == "/site:/a:/b"


@pytest.mark.parametrize("bad", [{"g": ["relative/dir"]}, {"g": ["/a:/b"]}, {"g": "/a"},
                                 {"g": [3]}])
def test_bad_mappings_are_refused_naming_the_group(bad):
    with pytest.raises(ValueError, match="group 'g'"):
        check_mapping(bad)
    c = Config()
    c.BatchSpawner.group_kernel_paths = bad
    with pytest.raises(TraitError, match="group_kernel_paths"):
        BatchSpawner(config=c)


def test_unix_groups_from_the_group_database():
    me = pwd.getpwuid(os.getuid()).pw_name
    assert grp.getgrgid(os.getgid()).gr_name in unix_groups(me)
    assert unix_groups("no-such-user-here") == set()


def test_the_setting_normalises_paths():
    c = Config()
    c.BatchSpawner.group_kernel_paths = {"belle2": ["/opt/group-kernels/belle2/"]}
    assert BatchSpawner(config=c).group_kernel_paths == {"belle2": ["/opt/group-kernels/belle2"]}
