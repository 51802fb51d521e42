"""What a run records about the machine that produced it."""

import platform

import torch

from harmonicdet.provenance import cpu_model, provenance


def test_cpu_model_reads_the_model_name_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"


def test_cpu_model_falls_back_without_cpuinfo(tmp_path):
    assert cpu_model(tmp_path / "missing") == (platform.processor() or "cpu")
    (tmp_path / "blank").write_text("processor\t: 0\nmodel name\t: \n")
    assert cpu_model(tmp_path / "blank") == (platform.processor() or "cpu")


def test_provenance_names_the_cpu_kernel_level():
    record = provenance()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu"] == cpu_model() and record["torch"] == torch.__version__
