"""Triton kernels of microast-fast, installed as ``microast_fast.kernels``.

One file per fused stage; modules never hold kernel code. (Empty in this release: see the README's
backend table for what runs today.)
"""
