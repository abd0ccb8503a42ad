/**
 * A small virtual file system for the simulated kernel: the sysfs entries
 * device discovery reads (`iommu_group` links, `vendor` files, mdev
 * directories) and the `/dev/vfio` nodes, so discovery code runs unchanged.
 */
import { posix } from 'node:path';
import { fail } from './errno.js';

type Node =
  | { readonly type: 'dir'; readonly children: Map<string, Node> }
  | { readonly type: 'file'; readonly read: () => string }
  | { readonly type: 'link'; readonly target: string }
  | { readonly type: 'chr'; readonly open: (flags: number) => number };

const MAX_LINKS = 40; // like the kernel's MAXSYMLINKS

export class SimFs {
  readonly #root: Node = { type: 'dir', children: new Map() };

  /** Creates the directory `path` and its parents. */
  mkdir(path: string): void {
    this.#dirAt(path, true);
  }

  /** A text file whose content is computed at each read. */
  file(path: string, read: string | (() => string)): void {
    this.#put(path, { type: 'file', read: typeof read === 'string' ? () => read : read });
  }

  /** A symbolic link to `target` (relative to the link's directory, or absolute). */
  symlink(path: string, target: string): void {
    this.#put(path, { type: 'link', target });
  }

  /** A character device node; `open` returns the new fd. */
  chr(path: string, open: (flags: number) => number): void {
    this.#put(path, { type: 'chr', open });
  }

  /** Removes `path` (a file, link, node or a whole directory). */
  remove(path: string): void {
    const { dir, name } = this.#parent(path, false);
    dir?.delete(name);
  }

  readlink(path: string): string {
    const node = this.#lookup(path, false);
    if (node.type !== 'link') fail('EINVAL');
    return node.target;
  }

  realpath(path: string): string {
    return this.#resolve(path, true).path;
  }

  readdir(path: string): string[] {
    const node = this.#lookup(path, true);
    if (node.type !== 'dir') fail('ENOTDIR');
    return [...node.children.keys()];
  }

  readFile(path: string): string {
    const node = this.#lookup(path, true);
    if (node.type === 'dir') fail('EISDIR');
    if (node.type !== 'file') fail('EINVAL');
    return node.read();
  }

  open(path: string, flags: number): number {
    const node = this.#lookup(path, true);
    if (node.type === 'chr') return node.open(flags);
    if (node.type === 'dir') fail('EISDIR');
    // Plain sysfs files are read with readFile, never opened by the library.
    fail('EACCES');
  }

  #lookup(path: string, follow: boolean): Node {
    return this.#resolve(path, follow).node;
  }

  /** Walks `path` component by component, following links in directories (and at the end if `follow`). */
  #resolve(path: string, follow: boolean, depth = 0): { node: Node; path: string } {
    if (depth > MAX_LINKS) fail('ELOOP');
    const parts = posix.normalize(posix.resolve('/', path)).split('/').filter(Boolean);
    let node: Node = this.#root;
    let at = '/';
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i] ?? '';
      if (node.type !== 'dir') fail('ENOTDIR');
      const child = node.children.get(part);
      if (child === undefined) fail('ENOENT');
      const here = posix.join(at, part);
      if (child.type === 'link' && (follow || i < parts.length - 1)) {
        const target = posix.resolve(at, child.target);
        const r = this.#resolve(target, true, depth + 1);
        node = r.node;
        at = r.path;
      } else {
        node = child;
        at = here;
      }
    }
    return { node, path: at };
  }

  #dirAt(path: string, create: boolean): Map<string, Node> | undefined {
    let node: Node = this.#root;
    for (const part of posix.resolve('/', path).split('/').filter(Boolean)) {
      if (node.type !== 'dir') fail('ENOTDIR');
      let child = node.children.get(part);
      if (child === undefined) {
        if (!create) return undefined;
        child = { type: 'dir', children: new Map() };
        node.children.set(part, child);
      }
      node = child;
    }
    if (node.type !== 'dir') fail('ENOTDIR');
    return node.children;
  }

  #parent(path: string, create: boolean): { dir: Map<string, Node> | undefined; name: string } {
    const abs = posix.resolve('/', path);
    return { dir: this.#dirAt(posix.dirname(abs), create), name: posix.basename(abs) };
  }

  #put(path: string, node: Node): void {
    const { dir, name } = this.#parent(path, true);
    dir?.set(name, node);
  }
}
