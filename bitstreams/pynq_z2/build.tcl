# Vivado batch build of the dwsep overlay for the PYNQ-Z2: dwsep.bit + dwsep.hwh beside this
# script.
#
#   dwsep build --board pynq-z2 [--config NAME] [--clock-mhz F] [--out DIR]
#   vivado -mode batch -source DIR/build.tcl [-tclargs JOBS]
#
# `dwsep build` writes this script's folder: dwsep_top.v (the accelerator),
# dwsep_accelerator.v (its Vivado shell), settings.tcl (config, part, fabric clock, the AXI
# subordinate and manager port names, and the block design's cell names, VLNVs and address
# windows, declared in bitstreams/build.py) and a copy of this script and ps7_pynq_z2.tcl.
# Steps: package the shell as IP dwsep.org:dwsep:accelerator:1.0 (the PYNQ driver binds to
# this VLNV), build a block design (PS7 with PYNQ-Z2 settings, FCLK_CLK0 at the chosen
# clock; on M_AXI_GP0 through an AXI interconnect the accelerator's registers at
# $dwsep_reg_base and an AXI interrupt controller at $dwsep_intc_base; DDR through one AXI
# interconnect per manager, which converts AXI4 to AXI3, to S_AXI_HP0, S_AXI_HP1, ... in
# the managers' order in settings.tcl: m_axi, m_axi_res, m_axi_pf; the accelerator's irq
# through the interrupt controller to IRQ_F2P, as pynq.Interrupt needs), then synthesize,
# implement, write the bitstream and copy the block design's hardware handoff.
# Written without access to Vivado: untested (see bitstreams/README.md).

set ip_vendor dwsep.org
set ip_library dwsep
set ip_name accelerator
set ip_version 1.0
set out [file dirname [file normalize [info script]]]

if {$argc > 1} {
    puts stderr "usage: vivado -mode batch -source build.tcl \[-tclargs JOBS\]"
    exit 2
}
set jobs [expr {$argc > 0 ? [lindex $argv 0] : 2}]
set sources [list [file join $out dwsep_top.v] [file join $out dwsep_accelerator.v]]
foreach f [concat $sources [list [file join $out settings.tcl]]] {
    if {![file exists $f]} {
        puts stderr "missing $f: run dwsep build --out $out first"
        exit 2
    }
}
source [file join $out settings.tcl]
set part $dwsep_part
set bd_name $dwsep_bd_name
source [file join $out ps7_pynq_z2.tcl]

# ---- 1. package the accelerator as IP ------------------------------------------------------
proc package_ip {out sources} {
    global part ip_vendor ip_library ip_name ip_version dwsep_slaves dwsep_masters \
        dwsep_reg_block dwsep_reg_range
    set ip_dir [file join $out ip]
    file delete -force $ip_dir [file join $out ip_project]
    create_project -force ip_project [file join $out ip_project] -part $part
    add_files -norecurse $sources
    set_property top dwsep_accelerator [current_fileset]
    update_compile_order -fileset sources_1
    ipx::package_project -root_dir $ip_dir -vendor $ip_vendor -library $ip_library \
        -taxonomy /UserIP -import_files
    set core [ipx::current_core]
    set_property vendor $ip_vendor $core
    set_property library $ip_library $core
    set_property name $ip_name $core
    set_property version $ip_version $core
    set_property display_name {dwsep depthwise-separable CNN accelerator} $core
    set_property description {dwsep accelerator: AXI4-Lite registers, AXI4 DDR master} $core
    set_property supported_families {zynq Production} $core
    foreach bus [concat $dwsep_slaves $dwsep_masters] {
        ipx::associate_bus_interfaces -busif $bus -clock aclk $core
    }
    # Each register window: $dwsep_reg_range bytes, one address block (the packager infers
    # it from the AXI4-Lite address width on most versions; make sure it exists).
    foreach bus $dwsep_slaves {
        set busif [ipx::get_bus_interfaces $bus -of_objects $core]
        if {[llength [ipx::get_memory_maps $bus -of_objects $core]] == 0} {
            ipx::add_memory_map $bus $core
            set_property slave_memory_map_ref $bus $busif
        }
        set mmap [ipx::get_memory_maps $bus -of_objects $core]
        if {[llength [ipx::get_address_blocks -of_objects $mmap]] == 0} {
            ipx::add_address_block $dwsep_reg_block $mmap
        }
        set_property range [expr {$dwsep_reg_range}] \
            [lindex [ipx::get_address_blocks -of_objects $mmap] 0]
    }
    ipx::create_xgui_files $core
    ipx::update_checksums $core
    ipx::check_integrity $core
    ipx::save_core $core
    close_project
    return $ip_dir
}

# ---- 2. block design ------------------------------------------------------------------------
proc build_block_design {bd_name vlnv} {
    global dwsep_slaves dwsep_masters dwsep_fclk_mhz dwsep_ps_cell dwsep_ps_vlnv dwsep_cell \
        dwsep_reg_base dwsep_reg_range dwsep_intc_cell dwsep_intc_vlnv dwsep_intc_bus \
        dwsep_intc_base dwsep_intc_range
    set ps $dwsep_ps_cell
    set acc $dwsep_cell
    set intc $dwsep_intc_cell
    create_bd_design $bd_name

    set ps_cell [create_bd_cell -type ip -vlnv $dwsep_ps_vlnv $ps]
    set_property -dict [ps7_pynq_z2_config $dwsep_fclk_mhz] $ps_cell
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config {make_external "FIXED_IO, DDR" apply_board_preset "0" Master "Disable" Slave "Disable"} \
        $ps_cell

    create_bd_cell -type ip -vlnv $vlnv $acc
    # The interrupt controller drives IRQ_F2P with one level `irq` wire (C_IRQ_CONNECTION 1,
    # not the MicroBlaze interrupt bus); its one input `intr` takes its width and kind from
    # the net that drives it (the shell declares irq SENSITIVITY LEVEL_HIGH).
    set intc_cell [create_bd_cell -type ip -vlnv $dwsep_intc_vlnv $intc]
    set_property -dict [list CONFIG.C_IRQ_CONNECTION {1} CONFIG.C_IRQ_IS_LEVEL {1}] $intc_cell
    create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 rst_fclk0
    # One manager port per register bus, and one for the interrupt controller (the last).
    set ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect:2.1 axi_ctrl]
    set_property -dict [list CONFIG.NUM_SI {1} \
        CONFIG.NUM_MI [expr {[llength $dwsep_slaves] + 1}]] $ctrl
    set i 0
    foreach bus $dwsep_masters {
        set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect:2.1 axi_mem$i]
        set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $mem
        incr i
    }

    # One clock (FCLK_CLK0) for the PS ports, the interconnects, the accelerator and the
    # interrupt controller; interconnect port clocks and resets are collected while the buses
    # are connected.
    set clocks [list [get_bd_pins $ps/M_AXI_GP0_ACLK] \
        [get_bd_pins $acc/aclk] [get_bd_pins $intc/s_axi_aclk] \
        [get_bd_pins rst_fclk0/slowest_sync_clk] \
        [get_bd_pins axi_ctrl/ACLK] [get_bd_pins axi_ctrl/S00_ACLK]]
    set resets [list [get_bd_pins $acc/aresetn] [get_bd_pins $intc/s_axi_aresetn] \
        [get_bd_pins axi_ctrl/S00_ARESETN]]
    set interconnect_resets [list [get_bd_pins axi_ctrl/ARESETN]]

    connect_bd_intf_net [get_bd_intf_pins $ps/M_AXI_GP0] [get_bd_intf_pins axi_ctrl/S00_AXI]
    set targets {}
    foreach bus $dwsep_slaves {
        lappend targets $acc/$bus
    }
    lappend targets $intc/$dwsep_intc_bus
    set i 0
    foreach target $targets {
        set port [format M%02d $i]
        connect_bd_intf_net [get_bd_intf_pins axi_ctrl/${port}_AXI] [get_bd_intf_pins $target]
        lappend clocks [get_bd_pins axi_ctrl/${port}_ACLK]
        lappend resets [get_bd_pins axi_ctrl/${port}_ARESETN]
        incr i
    }
    set i 0
    foreach bus $dwsep_masters {
        connect_bd_intf_net [get_bd_intf_pins $acc/$bus] [get_bd_intf_pins axi_mem$i/S00_AXI]
        connect_bd_intf_net [get_bd_intf_pins axi_mem$i/M00_AXI] \
            [get_bd_intf_pins $ps/S_AXI_HP$i]
        lappend clocks [get_bd_pins $ps/S_AXI_HP${i}_ACLK] [get_bd_pins axi_mem$i/ACLK] \
            [get_bd_pins axi_mem$i/S00_ACLK] [get_bd_pins axi_mem$i/M00_ACLK]
        lappend resets [get_bd_pins axi_mem$i/S00_ARESETN] [get_bd_pins axi_mem$i/M00_ARESETN]
        lappend interconnect_resets [get_bd_pins axi_mem$i/ARESETN]
        incr i
    }

    connect_bd_net [get_bd_pins $ps/FCLK_CLK0] {*}$clocks
    connect_bd_net [get_bd_pins $ps/FCLK_RESET0_N] [get_bd_pins rst_fclk0/ext_reset_in]
    connect_bd_net [get_bd_pins rst_fclk0/interconnect_aresetn] {*}$interconnect_resets
    connect_bd_net [get_bd_pins rst_fclk0/peripheral_aresetn] {*}$resets
    connect_bd_net [get_bd_pins $acc/irq] [get_bd_pins $intc/intr]
    connect_bd_net [get_bd_pins $intc/irq] [get_bd_pins $ps/IRQ_F2P]

    # Register windows from $dwsep_reg_base, one after the other; the interrupt controller at
    # $dwsep_intc_base; every accelerator manager sees all of DDR through its HP port.
    set offset $dwsep_reg_base
    foreach bus $dwsep_slaves {
        assign_bd_address -offset [format 0x%08X $offset] -range $dwsep_reg_range \
            -target_address_space [get_bd_addr_spaces $ps/Data] \
            [get_bd_addr_segs -of_objects [get_bd_intf_pins $acc/$bus]]
        incr offset $dwsep_reg_range
    }
    assign_bd_address -offset $dwsep_intc_base -range $dwsep_intc_range \
        -target_address_space [get_bd_addr_spaces $ps/Data] \
        [get_bd_addr_segs -of_objects [get_bd_intf_pins $intc/$dwsep_intc_bus]]
    set i 0
    foreach bus $dwsep_masters {
        assign_bd_address -target_address_space [get_bd_addr_spaces $acc/$bus] \
            [get_bd_addr_segs $ps/S_AXI_HP$i/HP${i}_DDR_LOWOCM]
        incr i
    }

    validate_bd_design
    save_bd_design
}

# ---- 3. project, implementation, outputs -----------------------------------------------------
set ip_dir [package_ip $out $sources]

create_project -force dwsep [file join $out vivado] -part $part
set_property ip_repo_paths [list $ip_dir] [current_project]
update_ip_catalog -rebuild
build_block_design $bd_name "$ip_vendor:$ip_library:$ip_name:$ip_version"

set bd_file [get_files $bd_name.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top ${bd_name}_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    puts stderr "implementation failed: see [get_property DIRECTORY [get_runs impl_1]]"
    exit 1
}

open_run impl_1
report_utilization -file [file join $out utilization.rpt]
report_timing_summary -file [file join $out timing.rpt]
set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
if {$wns < 0} {
    puts "WARNING: timing not met at $dwsep_fclk_mhz MHz (WNS $wns ns): see [file join $out timing.rpt]"
}

set impl_dir [get_property DIRECTORY [get_runs impl_1]]
file copy -force [file join $impl_dir ${bd_name}_wrapper.bit] [file join $out dwsep.bit]
# The hardware handoff sits under <project>.gen (Vivado 2020.2+) or <project>.srcs (older).
set hwh [glob -nocomplain [file join $out vivado dwsep.gen sources_1 bd $bd_name hw_handoff \
    $bd_name.hwh] [file join $out vivado dwsep.srcs sources_1 bd $bd_name hw_handoff \
    $bd_name.hwh]]
if {[llength $hwh] == 0} {
    puts stderr "no $bd_name.hwh found under [file join $out vivado]"
    exit 1
}
file copy -force [lindex $hwh 0] [file join $out dwsep.hwh]
puts "wrote [file join $out dwsep.bit] and [file join $out dwsep.hwh]"
