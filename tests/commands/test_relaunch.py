"""`--gpus N`: the same command again as N processes of one machine, through accelerate."""

from radd_cli.commands.relaunch import gpu_launch_command


def test_gpus_relaunch_through_accelerate_without_the_gpus_option():
    command = gpu_launch_command(4, ["train", "--gpus", "4", "--recipe", "small_radd", "--gpus=4"])
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[-4:] == ["radd_cli", "train", "--recipe", "small_radd"]
